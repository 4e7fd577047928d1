"""The demo's Celery tasks, in the seeds' domain: send an SMS, send a batch.

They show the three ways to write a :class:`~mingus_sessions.celery.DatabaseTask`:

- :class:`SendSMSTask`, a subclass with ``run()`` (the seeds' ``SendSMSTask``);
- :func:`mark_delivered`, ``@app.task(base=DatabaseTask)``;
- :func:`send_batch`, ``@shared_task(bind=True, base=DatabaseTask)``.

Each call runs in one transaction of the ``celery`` pool (``CELERY_POOL``),
committed when the call returns and rolled back when it raises. The services'
``session_scope("celery")`` inside a call is a SAVEPOINT on the call's session,
so the services must be given ``pool=self.db_session.pool``: a scope of
another pool (the default, ``main``) would be a separate transaction.

Delivery is at least once (``CELERY_TASK_ACKS_LATE``): a message may run twice,
after a worker died or when a retry follows a commit. Every communication
therefore carries an idempotency key derived from the task id, which stays the
same across redeliveries and retries, and the unique column makes a second run
find the first one's row instead of adding another.
"""

from __future__ import annotations

import uuid
from typing import Any

from celery import shared_task
from sqlalchemy import select, update

from mingus_sessions import current_session
from mingus_sessions.celery import DatabaseTask, TransactionManager
from project.celery import app

from . import services
from .models import Channel, Status
from .tables import communication_metrics, communication_preferences

__all__ = ["SendSMSTask", "mark_delivered", "send_batch", "send_sms"]


class SMSDisabled(ValueError):
    """The user has turned SMS off in their communication preferences."""


def _task_key(task: DatabaseTask, prefix: str) -> str:
    """``prefix-<task id>``: the same key every time this message is delivered.

    A task called directly (not through a worker or ``apply()``) has no id and
    gets a fresh key: there is no redelivery to guard against.
    """
    task_id = task.request.id
    return f"{prefix}-{task_id if task_id is not None else uuid.uuid4()}"


def _sms_enabled(session: Any, user_id: int) -> bool:
    """The user's ``sms_enabled`` (True when they have no preferences row)."""
    prefs = communication_preferences()
    enabled = session.execute(
        select(prefs.c.sms_enabled).where(prefs.c.user_id == user_id)
    ).scalar_one_or_none()
    return enabled is None or bool(enabled)


class SendSMSTask(DatabaseTask):
    """Send one SMS (simulated) and record it, with the user's engagement counters.

    The row, the engagement bump and ``last_sms_sent`` are written in the call's
    transaction. The delivery receipt (:func:`mark_delivered`) is published only
    once that transaction has committed: published earlier, it could run before
    the row exists, or for a row that is then rolled back.
    """

    name = "communications.send_sms"

    def run(
        self, user_id: int, message_type: str, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        # The task id is the same when the message is delivered again, so a
        # redelivery finds the first run's row by its key instead of adding one.
        key = idempotency_key or _task_key(self, "sms")
        session = self.db_session.session  # the call's session, opened now
        # Read when the task runs, not when it was queued: the user may have
        # turned SMS off in between.
        if not _sms_enabled(session, user_id):
            return {"skipped": "sms disabled", "idempotency_key": key}
        # A real task would call the SMS provider here, passing the same key
        # so that the provider, too, sends it once.
        recorded = services.record_communication(
            user_id=user_id,
            channel=Channel.SMS,
            message_type=message_type,
            status=Status.SENT,
            idempotency_key=key,
            pool=self.db_session.pool,  # a SAVEPOINT on the call's session
        )
        # Also when this run found the row of an earlier one: that run may have
        # committed and then died before publishing. mark_delivered is idempotent.
        mark_delivered.delay_on_commit(recorded.id)
        return {"id": recorded.id, "created": recorded.created, "idempotency_key": key}


send_sms: SendSMSTask = app.register_task(SendSMSTask())


@app.task(base=DatabaseTask, name="communications.mark_delivered")
def mark_delivered(communication_id: int) -> bool:
    """The provider's delivery receipt: ``sent`` becomes ``delivered`` (once).

    ``current_session()`` is the call's session here too. The ``WHERE status =
    'sent'`` makes a second run change nothing.
    """
    cm = communication_metrics()
    changed = current_session().execute(
        update(cm)
        .where(cm.c.id == communication_id, cm.c.status == Status.SENT.value)
        .values(status=Status.DELIVERED.value)
    )
    return bool(changed.rowcount)  # type: ignore[attr-defined]


@shared_task(bind=True, base=DatabaseTask, name="communications.send_batch")
def send_batch(self: DatabaseTask, user_ids: list[int], message_type: str) -> list[int]:
    """Record one SMS per user in one transaction: all of them, or none.

    If any user has SMS turned off, :class:`SMSDisabled` is raised, which is not
    a transient failure: the task fails at once and nothing is recorded. Recorded
    as the named transaction ``sms_batch`` (``get_transaction_stats()``).
    """
    pool = self.db_session.pool
    batch = _task_key(self, "batch")

    def send_to(user_id: int) -> Any:
        def operation(session: Any) -> int:
            if not _sms_enabled(session, user_id):
                raise SMSDisabled(f"user {user_id} has turned SMS off")
            return services.record_communication(
                user_id=user_id,
                channel=Channel.SMS,
                message_type=message_type,
                status=Status.SENT,
                idempotency_key=f"{batch}-{user_id}",
                pool=pool,
            ).id

        return operation

    return TransactionManager().batch_transaction(
        [send_to(user_id) for user_id in user_ids], "sms_batch", pool=pool
    )
