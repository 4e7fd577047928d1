"""The live analytics page and its JSON feed: async views on ``request.adb_session``.

Both views are ``async def``: their queries run on the request's
``AsyncSession`` (SQLAlchemy's asyncio extension on aiosqlite, or psycopg's
async side on PostgreSQL), in the event loop, with no thread per query. The
page shows the figures once and then polls the feed every few seconds.

Under an ASGI server (``make demo DEMO_SERVER=uvicorn``) ``SessionMiddleware``
runs in async mode and gives the view ``request.adb_session``, committed (here:
a read, so nothing to keep) and closed before the response. Under a WSGI
server (``runserver``, the default of ``make demo``) Django runs the async view
in an event loop of its own and the middleware, in sync mode, has no async
session to give: the view then opens its own ``asession_scope()``. The feed
says which of the two served it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from typing import Any

from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET
from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from mingus_sessions import SessionError, asession_scope

from .models import Channel, Status
from .tables import communication_metrics

__all__ = ["LiveFigures", "live_analytics", "live_analytics_feed", "live_figures"]

logger = logging.getLogger(__name__)

#: How many UTC days the page counts, today included.
DAYS = 7
#: How often the page asks the feed again, in milliseconds.
POLL_INTERVAL_MS = 3000


@dataclass(frozen=True, slots=True)
class LiveDay:
    """Communications sent on one UTC day, per status."""

    day: date
    by_status: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.by_status.values())

    def counts(self) -> list[int]:
        """The counts in ``by_status`` order, for the page's table."""
        return list(self.by_status.values())


@dataclass(frozen=True, slots=True)
class LiveFigures:
    """What the live page shows, read in one async session."""

    total: int
    by_status: dict[str, int]
    by_channel: dict[str, int]
    days: list[LiveDay]
    last_hour: int
    latest_sent_at: datetime | None
    #: ``request.adb_session`` (ASGI) or ``asession_scope()`` (a WSGI server).
    session: str
    generated_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def as_dict(self) -> dict[str, Any]:
        """The feed's JSON (dates and datetimes as ISO 8601, days oldest first)."""
        return {
            "total": self.total,
            "by_status": self.by_status,
            "by_channel": self.by_channel,
            "days": [
                {"day": d.day.isoformat(), "by_status": d.by_status, "total": d.total}
                for d in self.days
            ],
            "last_hour": self.last_hour,
            "latest_sent_at": self.latest_sent_at and self.latest_sent_at.isoformat(),
            "session": self.session,
            "generated_at": self.generated_at.isoformat(),
        }


async def live_figures(
    session: AsyncSession, *, served_by: str, now: datetime | None = None
) -> LiveFigures:
    """Counts per status and channel, per status on each of the last :data:`DAYS` UTC days,
    and in the last hour, in three aggregate queries on ``session``.

    The days are bucketed as the analytics report does: one
    ``count(CASE WHEN start <= sent_at < end ...)`` per day, the bounds as
    parameters, so the same SQL runs on SQLite, PostgreSQL and MySQL.
    """
    cm = communication_metrics()
    now = now or datetime.now(UTC)
    first = now.date() - timedelta(days=DAYS - 1)
    bounds = [datetime.combine(first + timedelta(days=i), time(), UTC) for i in range(DAYS + 1)]
    per_day = [
        func.count(case(((cm.c.sent_at >= start) & (cm.c.sent_at < end), 1)))
        for start, end in pairwise(bounds)
    ]
    totals = await session.execute(
        select(cm.c.status, cm.c.channel, func.count()).group_by(cm.c.status, cm.c.channel)
    )
    # Every known status and channel is listed, with zeros, so the page's rows are stable.
    by_status = dict.fromkeys(Status.values, 0)
    by_channel = dict.fromkeys(Channel.values, 0)
    for status, channel, count in totals:
        by_status[status] = by_status.get(status, 0) + count
        by_channel[channel] = by_channel.get(channel, 0) + count
    window = await session.execute(
        select(cm.c.status, *per_day)
        .where(cm.c.sent_at >= bounds[0], cm.c.sent_at < bounds[-1])
        .group_by(cm.c.status)
    )
    # The days' statuses in the totals' order: the page's columns line up.
    days = [LiveDay(bound.date(), dict.fromkeys(by_status, 0)) for bound in bounds[:-1]]
    for status, *counts in window:
        for day, count in zip(days, counts, strict=True):
            day.by_status[status] = int(count)
    last_hour, latest = (
        await session.execute(
            select(
                func.count(case((cm.c.sent_at >= now - timedelta(hours=1), 1))),
                func.max(cm.c.sent_at),
            )
        )
    ).one()
    return LiveFigures(
        total=sum(by_status.values()),
        by_status=by_status,
        by_channel=by_channel,
        days=days,
        last_hour=int(last_hour),
        latest_sent_at=latest,
        session=served_by,
    )


@asynccontextmanager
async def _async_session(request: HttpRequest) -> AsyncIterator[tuple[AsyncSession, str]]:
    """The request's async session, or a scope of the view's own under a WSGI server."""
    session = getattr(request, "adb_session", None)
    if session is not None:
        # SessionMiddleware ends it with the response: nothing to close here.
        yield session, "request.adb_session"
        return
    async with asession_scope() as own:
        yield own, "asession_scope()"


async def _read(request: HttpRequest) -> tuple[LiveFigures | None, str | None]:
    """The figures, or the class of the database error that kept them from being read."""
    try:
        async with _async_session(request) as (session, served_by):
            return await live_figures(session, served_by=served_by), None
    except SessionError as exc:
        logger.warning("The live analytics could not read the database: %s", exc)
        # The class only: the error's text is for the logs, not for visitors.
        return None, type(exc).__name__


@require_GET
async def live_analytics(request: HttpRequest) -> HttpResponse:
    """The live analytics page: the figures now, then refreshed from the feed."""
    figures, db_error = await _read(request)
    context = {
        "figures": figures,
        "db_error": db_error,
        "poll_interval_ms": POLL_INTERVAL_MS,
    }
    # Rendering is sync: the base template's messages may read the Django
    # session from the database, which Django allows only outside the loop.
    return await sync_to_async(render)(
        request,
        "communications/live_analytics.html",
        context,
        status=200 if db_error is None else 503,
    )


@require_GET
async def live_analytics_feed(request: HttpRequest) -> JsonResponse:
    """The figures as JSON; 503 with the error's class while the database is away."""
    figures, db_error = await _read(request)
    if figures is None:
        return JsonResponse({"error": db_error}, status=503)
    return JsonResponse(figures.as_dict())
