"""The SQLAlchemy side of the demo: write and read communications with ``session_scope``.

Writes go to the default pool (``main``); the summary reads on the read-only
``analytics`` pool, as reports would on a replica. Every timestamp written is
timezone-aware UTC; SQLite returns them naive (it has no time zones), so reads
put the UTC back.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mingus_sessions import session_scope

from .models import Channel, Status
from .tables import (
    auth_user,
    communication_metrics,
    communication_preferences,
    user_engagement_metrics,
)

__all__ = [
    "CommunicationRow",
    "EngagementSummary",
    "RecordedCommunication",
    "engagement_summary",
    "recent_communications",
    "record_communication",
]


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _as_utc(value: datetime | None) -> datetime | None:
    """The same instant in UTC; a naive value (SQLite's) is taken to be UTC already."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class RecordedCommunication:
    """What :func:`record_communication` did: the row's id, and whether it is new."""

    id: int
    created: bool


@dataclass(frozen=True, slots=True)
class CommunicationRow:
    """One communication as :func:`recent_communications` lists it."""

    id: int
    user_id: int
    username: str
    message_type: str
    channel: str
    status: str
    sent_at: datetime
    idempotency_key: str | None


@dataclass(frozen=True, slots=True)
class EngagementSummary:
    """Counts of communications per channel, per status, and per both."""

    total: int
    by_channel: dict[str, int]
    by_status: dict[str, int]
    by_channel_status: dict[str, dict[str, int]]
    #: Users with an engagement row, and the sum of their counters.
    engaged_users: int
    engagement_total: int
    generated_at: datetime = field(default_factory=_utcnow)

    def rows(self) -> list[tuple[str, list[int], int]]:
        """``(channel, [count per status in by_status order], channel total)`` for tables."""
        return [
            (
                channel,
                [statuses.get(status, 0) for status in self.by_status],
                self.by_channel[channel],
            )
            for channel, statuses in self.by_channel_status.items()
        ]

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict (``generated_at`` as ISO 8601)."""
        data = asdict(self)
        data["generated_at"] = self.generated_at.isoformat()
        return data


def _id_for_key(session: Session, idempotency_key: str) -> int | None:
    found = session.execute(
        select(communication_metrics.c.id).where(
            communication_metrics.c.idempotency_key == idempotency_key
        )
    ).scalar_one_or_none()
    return None if found is None else int(found)


def _bump_engagement(session: Session, pool: str | None, user_id: int, now: datetime) -> None:
    """Count one more communication for the user, creating the row on first use."""
    bump = (
        update(user_engagement_metrics)
        .where(user_engagement_metrics.c.user_id == user_id)
        .values(
            total_communications=user_engagement_metrics.c.total_communications + 1,
            last_activity=now,
        )
    )
    if session.execute(bump).rowcount:  # type: ignore[attr-defined]
        return
    try:
        # A nested scope is a SAVEPOINT: if another transaction created the row
        # since our UPDATE, only this INSERT is undone, not the communication.
        with session_scope(pool) as savepoint:
            savepoint.execute(
                insert(user_engagement_metrics).values(
                    user_id=user_id,
                    total_communications=1,
                    last_activity=now,
                    engagement_score=0.0,
                )
            )
    except IntegrityError:
        session.execute(bump)


def record_communication(
    user_id: int,
    channel: str,
    message_type: str,
    status: str = Status.SENT,
    idempotency_key: str | None = None,
    *,
    pool: str | None = None,
) -> RecordedCommunication:
    """Record one communication and count it in the user's engagement, in one transaction.

    With an ``idempotency_key`` that was already recorded, nothing is written
    and the existing row's id is returned with ``created=False``. SMS also
    stamps the user's ``last_sms_sent``. ``pool`` defaults to the default pool.
    """
    if channel not in Channel.values:
        raise ValueError(f"channel must be one of {', '.join(Channel.values)}, not {channel!r}")
    if status not in Status.values:
        raise ValueError(f"status must be one of {', '.join(Status.values)}, not {status!r}")
    now = _utcnow()
    with session_scope(pool) as session:
        if idempotency_key is not None:
            existing = _id_for_key(session, idempotency_key)
            if existing is not None:
                return RecordedCommunication(existing, created=False)
        try:
            with session_scope(pool) as savepoint:
                inserted = savepoint.execute(
                    insert(communication_metrics).values(
                        user_id=user_id,
                        message_type=message_type,
                        channel=str(channel),
                        status=str(status),
                        sent_at=now,
                        idempotency_key=idempotency_key,
                    )
                )
                # RETURNING where the database has it, the cursor's lastrowid
                # elsewhere (MySQL), so the same code runs on every backend.
                new_id = inserted.inserted_primary_key[0]  # type: ignore[attr-defined]
        except IntegrityError:
            # Another request with the same key committed between our SELECT
            # and INSERT; anything else (an unknown user) is the caller's error.
            existing = _id_for_key(session, idempotency_key) if idempotency_key else None
            if existing is None:
                raise
            return RecordedCommunication(existing, created=False)
        _bump_engagement(session, pool, user_id, now)
        if channel == Channel.SMS:
            session.execute(
                update(communication_preferences)
                .where(communication_preferences.c.user_id == user_id)
                .values(last_sms_sent=now, updated_at=now)
            )
    return RecordedCommunication(int(new_id), created=True)


def engagement_summary() -> EngagementSummary:
    """Communications counted per channel and status, read on the ``analytics`` pool."""
    cm = communication_metrics
    uem = user_engagement_metrics
    with session_scope("analytics") as session:
        rows = session.execute(
            select(cm.c.channel, cm.c.status, func.count()).group_by(cm.c.channel, cm.c.status)
        ).all()
        engaged_users, engagement_total = session.execute(
            select(func.count(), func.coalesce(func.sum(uem.c.total_communications), 0))
        ).one()
    # Every known channel and status is listed, with zeros, so the shape is stable.
    by_channel = dict.fromkeys(Channel.values, 0)
    by_status = dict.fromkeys(Status.values, 0)
    by_channel_status = {channel: dict.fromkeys(Status.values, 0) for channel in Channel.values}
    for channel, status, count in rows:
        by_channel[channel] = by_channel.get(channel, 0) + count
        by_status[status] = by_status.get(status, 0) + count
        by_channel_status.setdefault(channel, {})[status] = count
    return EngagementSummary(
        total=sum(by_channel.values()),
        by_channel=by_channel,
        by_status=by_status,
        by_channel_status=by_channel_status,
        engaged_users=int(engaged_users),
        engagement_total=int(engagement_total),
    )


def recent_communications(limit: int = 20) -> list[CommunicationRow]:
    """The ``limit`` most recent communications, newest first, with the user's name.

    Read on the default pool, not ``analytics``: the page shows it right after
    a write, and a real replica might not have that write yet.
    """
    cm = communication_metrics
    query = (
        select(
            cm.c.id,
            cm.c.user_id,
            auth_user.c.username,
            cm.c.message_type,
            cm.c.channel,
            cm.c.status,
            cm.c.sent_at,
            cm.c.idempotency_key,
        )
        .join(auth_user, auth_user.c.id == cm.c.user_id)
        .order_by(cm.c.sent_at.desc(), cm.c.id.desc())
        .limit(max(int(limit), 0))
    )
    with session_scope() as session:
        rows = session.execute(query).all()
    return [
        CommunicationRow(
            id=row.id,
            user_id=row.user_id,
            username=row.username,
            message_type=row.message_type,
            channel=row.channel,
            status=row.status,
            sent_at=_as_utc(row.sent_at),  # type: ignore[arg-type]
            idempotency_key=row.idempotency_key,
        )
        for row in rows
    ]
