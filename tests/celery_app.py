"""The Celery app and tasks that tests/celery/test_workers.py runs in real workers.

A worker is started as ``python -m celery -A tests.celery_app worker ...`` with
``MINGUS_CELERY_BROKER_URL``, ``MINGUS_CELERY_QUEUE`` and
``MINGUS_CELERY_WORKER=1`` in its environment (and ``MINGUS_TEST_USE_TEST_NAMES=1``
so that the settings point at the test database pytest-django created). The
test process imports this module too, and builds a producer app on the same
broker with :func:`make_app`; only a worker touches the database at import and
records outcomes.

Tasks report what happened through the database, never through a result
backend: each attempt writes a row to ``celery_attempts`` in a transaction of
its own (committed at once, whatever becomes of the task's transaction), the
effect a task exists for goes to ``celery_effects`` (``key`` is unique: the
idempotency key), and every finished call (success, failure, retry) is
recorded in ``celery_outcomes`` by a ``task_postrun`` handler.
"""

from __future__ import annotations

import os
import time
from typing import Any

import django
from django.apps import apps

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
if not apps.ready:
    django.setup()

from celery import Celery, signals
from celery.exceptions import Retry
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.orm import Session

from mingus_sessions import session_scope
from mingus_sessions.celery import DatabaseTask

IN_WORKER = os.environ.get("MINGUS_CELERY_WORKER") == "1"
PREFIX = "tests.worker."

#: The schema the tests create in the test database (PostgreSQL).
SCHEMA = (
    """CREATE TABLE IF NOT EXISTS celery_attempts (
        id serial PRIMARY KEY, task text NOT NULL, key text NOT NULL, attempt int NOT NULL,
        phase text NOT NULL DEFAULT 'start', pid int NOT NULL, backend_pid int,
        parent_pid int, parent_backend_pid int, detail text, at timestamptz DEFAULT now())""",
    """CREATE TABLE IF NOT EXISTS celery_effects (
        id serial PRIMARY KEY, key text NOT NULL UNIQUE, value text, pid int)""",
    """CREATE TABLE IF NOT EXISTS celery_outcomes (
        id serial PRIMARY KEY, task_id text, task text, key text, state text, detail text,
        pid int, retries int)""",
    """CREATE TABLE IF NOT EXISTS celery_counters (name text PRIMARY KEY, value int NOT NULL)""",
)
TABLES = ("celery_attempts", "celery_effects", "celery_outcomes", "celery_counters")


def backend_pid(session: Session) -> int:
    return int(session.execute(text("SELECT pg_backend_pid()")).scalar_one())


def log(task: str, key: str, attempt: int, phase: str = "start", **extra: Any) -> None:
    """Record an attempt in a transaction of its own (committed now, whatever follows)."""
    row = {
        "task": task,
        "key": key,
        "attempt": attempt,
        "phase": phase,
        "pid": os.getpid(),
        "backend_pid": extra.get("backend_pid"),
        "parent_pid": PARENT.get("pid"),
        "parent_backend_pid": PARENT.get("backend_pid"),
        "detail": extra.get("detail"),
    }
    with session_scope(independent=True) as session:
        session.execute(
            text(
                "INSERT INTO celery_attempts (task, key, attempt, phase, pid, backend_pid, "
                "parent_pid, parent_backend_pid, detail) VALUES (:task, :key, :attempt, :phase, "
                ":pid, :backend_pid, :parent_pid, :parent_backend_pid, :detail)"
            ),
            row,
        )


def attempts_logged(key: str, phase: str = "start") -> int:
    with session_scope(independent=True) as session:
        return int(
            session.execute(
                text("SELECT count(*) FROM celery_attempts WHERE key = :k AND phase = :p"),
                {"k": key, "p": phase},
            ).scalar_one()
        )


def write_effect(session: Session, key: str, value: str, *, idempotent: bool = False) -> bool:
    """Insert the effect; with ``idempotent``, an existing key is left alone (False)."""
    sql = "INSERT INTO celery_effects (key, value, pid) VALUES (:k, :v, :pid)"
    if idempotent:
        sql += " ON CONFLICT (key) DO NOTHING"
    result = session.execute(text(sql), {"k": key, "v": value, "pid": os.getpid()})
    return bool(result.rowcount)  # type: ignore[attr-defined]


def terminate(pid: int) -> None:
    """End a backend from another connection, and wait until it is gone."""
    with session_scope(independent=True) as admin:
        admin.execute(text("SELECT pg_terminate_backend(:pid, 5000)"), {"pid": pid})


# -- what the worker's main process did before forking its children -------------------------

#: The worker's main process: its pid and the backend of the connection it opened at import.
PARENT: dict[str, int] = {}

if IN_WORKER:
    # Touch the engine in the parent, before the pool forks: the children must
    # never use this connection (fork safety with no user action).
    with session_scope() as _session:
        PARENT.update(pid=os.getpid(), backend_pid=backend_pid(_session))


# -- tasks --------------------------------------------------------------------------------


def commit_effect(self: DatabaseTask, key: str, value: str) -> str:
    """(1) Write the effect in the call's transaction; committed when the call returns."""
    session = self.db_session.session
    log("commit_effect", key, self.request.retries, backend_pid=backend_pid(session))
    write_effect(session, key, value)
    return value


def killed_backend(self: DatabaseTask, key: str) -> None:
    """(2) First attempt: write, have the backend terminated, then run one more statement."""
    session = self.db_session.session
    pid = backend_pid(session)
    log("killed_backend", key, self.request.retries, backend_pid=pid)
    write_effect(session, key, f"attempt {self.request.retries}")
    if self.request.retries == 0:
        terminate(pid)
    session.execute(text("SELECT 1"))


def deadlock_pair(self: DatabaseTask, key: str, first: str, second: str) -> None:
    """(2) Lock `first`, wait for the partner to lock `second`, then lock `second`."""
    session = self.db_session.session
    attempt = self.request.retries
    me = f"{key}-{first}"
    log("deadlock_pair", me, attempt, backend_pid=backend_pid(session))
    session.execute(text("SET LOCAL deadlock_timeout = '100ms'"))
    session.execute(text("SET LOCAL lock_timeout = '20s'"))
    bump = text("UPDATE celery_counters SET value = value + 1 WHERE name = :n")
    session.execute(bump, {"n": f"{key}-{first}"})
    if attempt == 0:
        log("deadlock_pair", me, attempt, phase="locked")
        deadline = time.monotonic() + 15.0
        while attempts_logged(f"{key}-{second}", "locked") == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
    session.execute(bump, {"n": f"{key}-{second}"})
    write_effect(session, me, f"attempt {attempt}")


def poison_integrity(self: DatabaseTask, key: str) -> None:
    """(3) Violate the unique key and let the IntegrityError out."""
    session = self.db_session.session
    log("poison_integrity", key, self.request.retries, backend_pid=backend_pid(session))
    write_effect(session, key, "duplicate")


def poison_swallowed(self: DatabaseTask, key: str) -> str:
    """(3) Violate the unique key and swallow the error, leaving the transaction failed."""
    session = self.db_session.session
    log("poison_swallowed", key, self.request.retries, backend_pid=backend_pid(session))
    try:
        write_effect(session, key, "duplicate")
    except sa_exc.IntegrityError:
        return "swallowed"
    return "no error?"


def poison_killed(self: DatabaseTask, key: str) -> None:
    """(3) Have its own backend terminated mid-transaction (db_max_retries=0: it fails)."""
    session = self.db_session.session
    pid = backend_pid(session)
    log("poison_killed", key, self.request.retries, backend_pid=pid)
    terminate(pid)
    session.execute(text("SELECT 1"))


def hold_in_transaction(self: DatabaseTask, key: str) -> None:
    """(4) Write idempotently in the call's transaction; the first attempt then hangs in it."""
    session = self.db_session.session
    log("hold_in_transaction", key, self.request.retries, backend_pid=backend_pid(session))
    write_effect(session, key, f"pid {os.getpid()}", idempotent=True)
    if attempts_logged(key) == 1:
        log("hold_in_transaction", key, self.request.retries, phase="holding")
        time.sleep(60)


def commit_then_hold(self: DatabaseTask, key: str) -> None:
    """(4) Commit the write at once; the first attempt then hangs before the message is acked."""
    log("commit_then_hold", key, self.request.retries)
    with self.db_session.session_scope(independent=True) as session:
        inserted = write_effect(session, key, f"pid {os.getpid()}", idempotent=True)
    log("commit_then_hold", key, self.request.retries, phase="wrote", detail=str(inserted))
    if attempts_logged(key) == 1:
        log("commit_then_hold", key, self.request.retries, phase="holding")
        time.sleep(60)


def hold_default_ack(self: DatabaseTask, key: str) -> None:
    """(4) Celery's default (ack on receipt): the first attempt hangs."""
    log("hold_default_ack", key, self.request.retries)
    if attempts_logged(key) == 1:
        log("hold_default_ack", key, self.request.retries, phase="holding")
        time.sleep(60)


def report_backend(self: DatabaseTask, key: str) -> None:
    """(5) Report this child's pid and backend pid (and the parent's, inherited)."""
    session = self.db_session.session
    log("report_backend", key, self.request.retries, backend_pid=backend_pid(session))
    session.execute(text("SELECT pg_sleep(0.3)"))


def parent_probe(key: str) -> None:
    """(5) Never run: its arrival makes the main process use its own pool (task_received)."""


def check_marker(self: DatabaseTask, key: str) -> None:
    """(6) Report whether the publisher's row was committed when this task ran."""
    session = self.db_session.session
    seen = session.execute(
        text("SELECT count(*) FROM celery_effects WHERE key = :k"), {"k": key}
    ).scalar_one()
    log("check_marker", key, self.request.retries, detail=f"marker rows {seen}")


_DOWN_APPS: dict[int, Any] = {}


def _down_target(port: int) -> Any:
    """A task on an app whose broker is a closed port (nothing listens: publishing fails)."""
    if port not in _DOWN_APPS:
        down = Celery(f"mingus-worker-tests-down-{port}", set_as_current=False)
        down.conf.update(
            broker_url=f"redis://127.0.0.1:{port}/0",
            broker_connection_retry=False,
            broker_transport_options={"max_retries": 1, "interval_start": 0, "interval_step": 0.1},
            task_publish_retry_policy={"max_retries": 1, "interval_start": 0, "interval_step": 0.1},
        )
        _DOWN_APPS[port] = down.task(base=DatabaseTask, name=PREFIX + "down_target", shared=False)(
            parent_probe
        )
    return _DOWN_APPS[port]


def publish_to_down_broker(self: DatabaseTask, key: str, port: int) -> None:
    """(7) Write, and enqueue a task on a broker that is down once the call commits."""
    session = self.db_session.session
    log("publish_to_down_broker", key, self.request.retries)
    write_effect(session, key, "committed before the publish")
    _down_target(port).delay_on_commit(key)


TASKS: dict[str, tuple[Any, dict[str, Any]]] = {
    "publish_to_down_broker": (publish_to_down_broker, {"bind": True}),
    "commit_effect": (commit_effect, {"bind": True}),
    "killed_backend": (killed_backend, {"bind": True}),
    "deadlock_pair": (deadlock_pair, {"bind": True}),
    "poison_integrity": (poison_integrity, {"bind": True}),
    "poison_swallowed": (poison_swallowed, {"bind": True}),
    "poison_killed": (poison_killed, {"bind": True, "db_max_retries": 0}),
    "hold_in_transaction": (
        hold_in_transaction,
        {"bind": True, "acks_late": True, "reject_on_worker_lost": True},
    ),
    "commit_then_hold": (
        commit_then_hold,
        {"bind": True, "acks_late": True, "reject_on_worker_lost": True},
    ),
    "hold_default_ack": (hold_default_ack, {"bind": True}),
    "report_backend": (report_backend, {"bind": True}),
    "parent_probe": (parent_probe, {}),
    "check_marker": (check_marker, {"bind": True}),
}


def make_app(broker_url: str, queue: str, **conf: Any) -> Celery:
    """A Celery app on ``broker_url`` whose tasks go to ``queue``; the caller closes it."""
    celery_app = Celery(f"mingus-worker-tests-{queue}", set_as_current=False)
    celery_app.conf.update(
        broker_url=broker_url,
        task_default_queue=queue,
        broker_connection_retry_on_startup=True,
        worker_enable_remote_control=False,
        worker_hijack_root_logger=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        **conf,
    )
    for name, (fn, options) in TASKS.items():
        celery_app.task(base=DatabaseTask, name=PREFIX + name, shared=False, **options)(fn)
    return celery_app


app = make_app(
    os.environ.get("MINGUS_CELERY_BROKER_URL", "memory://"),
    os.environ.get("MINGUS_CELERY_QUEUE", "mingus-test"),
)


# -- signals (in the worker only) -----------------------------------------------------------


def _record_outcome(
    sender: Any = None,
    task_id: str | None = None,
    task: Any = None,
    args: Any = None,
    state: str | None = None,
    retval: Any = None,
    **kwargs: Any,
) -> None:
    if task is None or not str(task.name).startswith(PREFIX):
        return
    if isinstance(retval, Retry):
        detail = f"Retry({type(retval.exc).__name__})"
    elif isinstance(retval, BaseException):
        detail = type(retval).__name__
    else:
        detail = repr(retval)
    with session_scope(independent=True) as session:
        session.execute(
            text(
                "INSERT INTO celery_outcomes (task_id, task, key, state, detail, pid, retries) "
                "VALUES (:id, :task, :key, :state, :detail, :pid, :retries)"
            ),
            {
                "id": task_id,
                "task": task.name[len(PREFIX) :],
                "key": str(args[0]) if args else None,
                "state": state,
                "detail": detail[:200],
                "pid": os.getpid(),
                "retries": task.request.retries,
            },
        )


def _probe_parent(sender: Any = None, request: Any = None, **kwargs: Any) -> None:
    # Runs in the worker's main process (the consumer), long after it forked its children.
    if request is None or request.name != PREFIX + "parent_probe":
        return
    with session_scope() as session:
        pid = backend_pid(session)
    log("parent_probe", str(request.args[0]), 0, backend_pid=pid)


if IN_WORKER:
    signals.task_postrun.connect(_record_outcome, weak=False)
    signals.task_received.connect(_probe_parent, weak=False)
