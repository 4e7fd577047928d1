"""The SQLAlchemy side of the demo: communications, preferences and reports.

The tables come from ``table_for`` (:mod:`.tables`), so their types store values
as Django does: aware datetimes go in and come back aware in UTC on every
backend, with nothing to convert here.

Writes go to the default pool (``main``) through ``session_scope()``: inside a
request served with ``SessionMiddleware`` that scope is a SAVEPOINT on the
request's session, which the middleware commits or rolls back with the
response. :func:`save_preferences` writes with the ORM and SQLAlchemy in one
Django transaction (``session_scope(join_django=True)``). The summary and the
analytics report read on the read-only ``analytics`` pool, as reports would on a
replica.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from typing import Any

from django.db import transaction
from sqlalchemy import Select, case, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mingus_sessions import session_scope

from .models import Channel, CommunicationPreferences, Status, UserEngagementMetrics
from .tables import (
    auth_user,
    communication_metrics,
    communication_preferences,
    user_engagement_metrics,
)

__all__ = [
    "AnalyticsReport",
    "CommunicationRow",
    "DayCount",
    "EngagementSummary",
    "PreferencesState",
    "RecordedCommunication",
    "SimulatedFailure",
    "TopUser",
    "analytics_report",
    "engagement_summary",
    "preferences_state",
    "recent_communications",
    "record_communication",
    "save_preferences",
]


def _utcnow() -> datetime:
    return datetime.now(UTC)


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
    cm = communication_metrics()
    found = session.execute(
        select(cm.c.id).where(cm.c.idempotency_key == idempotency_key)
    ).scalar_one_or_none()
    return None if found is None else int(found)


def _bump_engagement(session: Session, pool: str | None, user_id: int, now: datetime) -> None:
    """Count one more communication for the user, creating the row on first use."""
    uem = user_engagement_metrics()
    bump = (
        update(uem)
        .where(uem.c.user_id == user_id)
        .values(total_communications=uem.c.total_communications + 1, last_activity=now)
    )
    if session.execute(bump).rowcount:  # type: ignore[attr-defined]
        return
    try:
        # A nested scope is a SAVEPOINT: if another transaction created the row
        # since our UPDATE, only this INSERT is undone, not the communication.
        with session_scope(pool) as savepoint:
            # engagement_score is left out: the model's default (0.0) is the
            # column's default in table_for's table.
            savepoint.execute(
                insert(uem).values(user_id=user_id, total_communications=1, last_activity=now)
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
    sent_at: datetime | None = None,
    pool: str | None = None,
) -> RecordedCommunication:
    """Record one communication and count it in the user's engagement, in one transaction.

    With an ``idempotency_key`` that was already recorded, nothing is written
    and the existing row's id is returned with ``created=False``. SMS also
    stamps the user's ``last_sms_sent``. ``sent_at`` (an aware datetime)
    defaults to now; it is also the user's ``last_activity``. ``pool``
    defaults to the default pool. Inside a request handled by
    ``SessionMiddleware`` (or any scope of the pool) this is a SAVEPOINT, and
    the outer transaction decides whether it is committed.
    """
    if channel not in Channel.values:
        raise ValueError(f"channel must be one of {', '.join(Channel.values)}, not {channel!r}")
    if status not in Status.values:
        raise ValueError(f"status must be one of {', '.join(Status.values)}, not {status!r}")
    now = sent_at if sent_at is not None else _utcnow()
    cm = communication_metrics()
    with session_scope(pool) as session:
        if idempotency_key is not None:
            existing = _id_for_key(session, idempotency_key)
            if existing is not None:
                return RecordedCommunication(existing, created=False)
        try:
            with session_scope(pool) as savepoint:
                inserted = savepoint.execute(
                    insert(cm).values(
                        user_id=user_id,
                        message_type=message_type,
                        # The plain value, not the TextChoices member.
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
            prefs = communication_preferences()
            # updated_at is auto_now: table_for's table sets it on every UPDATE.
            session.execute(
                update(prefs).where(prefs.c.user_id == user_id).values(last_sms_sent=now)
            )
    return RecordedCommunication(int(new_id), created=True)


def engagement_summary() -> EngagementSummary:
    """Communications counted per channel and status, read on the ``analytics`` pool."""
    cm = communication_metrics()
    uem = user_engagement_metrics()
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
    a write, and a real replica might not have that write yet. In a request,
    that is the request's session (the scope is a SAVEPOINT on it).
    """
    cm = communication_metrics()
    user = auth_user()
    query = (
        select(
            cm.c.id,
            cm.c.user_id,
            user.c.username,
            cm.c.message_type,
            cm.c.channel,
            cm.c.status,
            cm.c.sent_at,
            cm.c.idempotency_key,
        )
        .join_from(cm, user)  # ON user_id = auth_user.id, from table_for's foreign key
        .order_by(cm.c.sent_at.desc(), cm.c.id.desc())
        .limit(max(int(limit), 0))
    )
    with session_scope() as session:
        rows = session.execute(query).all()
    # sent_at comes back aware in UTC on every backend (table_for's type).
    return [CommunicationRow(**row._asdict()) for row in rows]


# --- Preferences: the ORM and SQLAlchemy in one transaction --------------------------


class SimulatedFailure(RuntimeError):
    """Raised on purpose by :func:`save_preferences` after both writes, to roll them back."""

    def __init__(self, inside: PreferencesState) -> None:
        super().__init__("Simulated failure after both writes")
        #: What the transaction held just before the failure (then rolled back).
        self.inside = inside


@dataclass(frozen=True, slots=True)
class PreferencesState:
    """A user's preferences and engagement ``last_activity``, as one read saw them."""

    sms_enabled: bool
    email_enabled: bool
    quiet_hours_start: time | None
    quiet_hours_end: time | None
    updated_at: datetime | None
    last_activity: datetime | None


def _state_query(user_id: int) -> Select[Any]:
    """One user's preferences and ``last_activity``, for :class:`PreferencesState`."""
    prefs, uem = communication_preferences(), user_engagement_metrics()
    return (
        select(
            prefs.c.sms_enabled,
            prefs.c.email_enabled,
            prefs.c.quiet_hours_start,
            prefs.c.quiet_hours_end,
            prefs.c.updated_at,
            uem.c.last_activity,
        )
        # Both tables refer to auth_user, not to each other: the condition is explicit.
        .outerjoin(uem, uem.c.user_id == prefs.c.user_id)
        .where(prefs.c.user_id == user_id)
    )


def preferences_state(user_id: int) -> PreferencesState | None:
    """The user's committed preferences and ``last_activity`` (ORM reads), or None.

    Read through the ORM on purpose: after :func:`save_preferences` it checks,
    by another road than the SQLAlchemy write took, what the database holds.
    """
    prefs = CommunicationPreferences.objects.filter(user_id=user_id).first()
    if prefs is None:
        return None
    engagement = UserEngagementMetrics.objects.filter(user_id=user_id).first()
    return PreferencesState(
        sms_enabled=prefs.sms_enabled,
        email_enabled=prefs.email_enabled,
        quiet_hours_start=prefs.quiet_hours_start,
        quiet_hours_end=prefs.quiet_hours_end,
        updated_at=prefs.updated_at,
        last_activity=engagement.last_activity if engagement else None,
    )


def save_preferences(
    prefs: CommunicationPreferences, *, simulate_failure: bool = False
) -> PreferencesState:
    """Save ``prefs`` with the ORM and stamp the user's ``last_activity`` with SQLAlchemy.

    Both writes are in one Django transaction on the default database: the
    SQLAlchemy session is joined to it (``session_scope(join_django=True)``),
    so they commit together when the ``atomic`` block ends, or neither does.
    Returns the state read inside the transaction, through the joined session,
    after both writes. With ``simulate_failure``, raises
    :class:`SimulatedFailure` after both writes, inside the ``atomic`` block:
    nothing is committed.

    On SQLite, call it before the request's own session (``request.db_session``)
    has written: that session is a second connection, and SQLite lets one
    connection write at a time.
    """
    now = _utcnow()
    uem = user_engagement_metrics()
    with transaction.atomic():
        prefs.save()  # the ORM write: updated_at is auto_now
        with session_scope(join_django=True) as session:
            # The SQLAlchemy write, on Django's connection and in its transaction.
            stamped = session.execute(
                update(uem).where(uem.c.user_id == prefs.user_id).values(last_activity=now)
            ).rowcount  # type: ignore[attr-defined]
            if not stamped:
                # No communication yet: the counters take the model's defaults.
                session.execute(insert(uem).values(user_id=prefs.user_id, last_activity=now))
            # The joined session sees the ORM's uncommitted save().
            row = session.execute(_state_query(prefs.user_id)).one()
        inside = PreferencesState(**row._asdict())
        if simulate_failure:
            # Leaves the atomic block with an exception: Django rolls back both writes.
            raise SimulatedFailure(inside)
    return inside


# --- Analytics: Django's tables, read through table_for on the analytics pool -------


@dataclass(frozen=True, slots=True)
class TopUser:
    """One user of :attr:`AnalyticsReport.top_users`."""

    username: str
    communications: int
    last_sent: datetime | None


@dataclass(frozen=True, slots=True)
class DayCount:
    """Communications sent on one UTC day."""

    day: date
    count: int


@dataclass(frozen=True, slots=True)
class AnalyticsReport:
    """What the analytics page shows, read in one ``analytics`` scope."""

    total: int
    by_channel: dict[str, int]
    by_status: dict[str, int]
    top_users: list[TopUser]
    last_days: list[DayCount]
    generated_at: datetime = field(default_factory=_utcnow)

    @property
    def last_days_total(self) -> int:
        return sum(day.count for day in self.last_days)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict (dates and datetimes as ISO 8601)."""
        return {
            "total": self.total,
            "by_channel": self.by_channel,
            "by_status": self.by_status,
            "top_users": [
                [u.username, u.communications, u.last_sent and u.last_sent.isoformat()]
                for u in self.top_users
            ],
            "last_days": {d.day.isoformat(): d.count for d in self.last_days},
            "generated_at": self.generated_at.isoformat(),
        }


def analytics_report(*, days: int = 7, top: int = 5, today: date | None = None) -> AnalyticsReport:
    """Counts per channel and status, the ``top`` users, and the last ``days`` UTC days.

    Read on the read-only ``analytics`` pool. The day buckets are computed
    portably: one ``count(CASE WHEN sent_at >= start AND sent_at < end ...)``
    per day, with the bounds as parameters, instead of a date function that
    differs between SQLite, PostgreSQL and MySQL. ``today`` (UTC) defaults to
    the current day.
    """
    cm = communication_metrics()
    user = auth_user()
    first = (today or _utcnow().date()) - timedelta(days=days - 1)
    bounds = [datetime.combine(first + timedelta(days=i), time(), UTC) for i in range(days + 1)]
    per_day = [
        func.count(case(((cm.c.sent_at >= start) & (cm.c.sent_at < end), 1)))
        for start, end in pairwise(bounds)
    ]
    with session_scope("analytics") as session:
        by_channel = dict.fromkeys(Channel.values, 0)
        by_channel.update(
            session.execute(select(cm.c.channel, func.count()).group_by(cm.c.channel)).all()
        )
        by_status = dict.fromkeys(Status.values, 0)
        by_status.update(
            session.execute(select(cm.c.status, func.count()).group_by(cm.c.status)).all()
        )
        communications = func.count(cm.c.id).label("communications")
        top_rows = session.execute(
            select(user.c.username, communications, func.max(cm.c.sent_at).label("last_sent"))
            .join_from(cm, user)  # the foreign key gives the ON clause
            .group_by(user.c.id, user.c.username)
            .order_by(communications.desc(), user.c.username)
            .limit(max(int(top), 0))
        ).all()
        # The WHERE bounds the scan to the window (sent_at is indexed).
        day_counts = session.execute(select(*per_day).where(cm.c.sent_at >= bounds[0])).one()
    return AnalyticsReport(
        total=sum(by_channel.values()),
        by_channel={key: int(value) for key, value in by_channel.items()},
        by_status={key: int(value) for key, value in by_status.items()},
        top_users=[TopUser(r.username, int(r.communications), r.last_sent) for r in top_rows],
        last_days=[
            DayCount(bound.date(), int(count))
            for bound, count in zip(bounds[:-1], day_counts, strict=True)
        ],
    )
