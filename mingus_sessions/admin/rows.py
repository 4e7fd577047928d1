"""Pools as the admin's tables show them: one row per pool, from a published snapshot.

A row reads a pool's ``PoolMetrics.as_dict()``: this process's own (read now)
or another process's (as it published it to the fleet cache), so that the
dashboard, a pool's page and a process's page render pools the same way. A
pool whose circuit breaker is open is shown as unreachable, never as "0 %":
nothing is checked out because nothing can connect.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.utils.safestring import SafeString, mark_safe

from .actions import PoolAction
from .charts import format_percent, utilization_bar
from .links import admin_url

__all__ = ["ActionButton", "PoolRow", "as_utc", "pool_rows", "pool_state"]

#: What a breaker's state says about reaching the pool's database.
_STATES = {"open": "unreachable", "half_open": "probing"}


@dataclass(frozen=True, slots=True)
class ActionButton:
    """A POST form on the page: where it goes, its label, what it does."""

    url: str
    label: str
    help: str
    slug: str


@dataclass(frozen=True, slots=True)
class PoolRow:
    """One pool as the tables show it: its figures plus a link, buttons, a bar, a state."""

    #: ``PoolMetrics.as_dict()``: the templates read ``metrics.checkouts``, ``metrics.hold_ms.p99``.
    metrics: Mapping[str, Any]
    #: The pool's page, or "" for a pool that this process does not have.
    url: str
    bar: SafeString
    #: "reachable", "unreachable" (breaker open) or "probing" (breaker half-open).
    state: str
    #: When the counters were last reset, for reading (``metrics["since"]`` is ISO 8601).
    since: str = ""
    actions: list[ActionButton] = field(default_factory=list)

    @property
    def unreachable(self) -> bool:
        return self.state == "unreachable"

    @property
    def percent(self) -> str:
        return format_percent(float(self.metrics.get("utilization", 0.0)))


def pool_state(metrics: Mapping[str, Any]) -> str:
    """ "unreachable", "probing" or "reachable", from the pool's breaker state."""
    return _STATES.get(str(metrics.get("circuit_state", "closed")), "reachable")


def as_utc(timestamp: float) -> str:
    """A POSIX time for reading: ``2024-05-01 12:00:00 UTC``."""
    return dt.datetime.fromtimestamp(timestamp, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _since(metrics: Mapping[str, Any]) -> str:
    since = metrics.get("since")
    if not since:
        return ""
    try:
        return as_utc(dt.datetime.fromisoformat(str(since)).timestamp())
    except ValueError:
        return str(since)  # shown as published rather than hidden


def pool_rows(
    site: str,
    pools: Mapping[str, Mapping[str, Any]],
    *,
    actions: Sequence[PoolAction] = (),
    linked: Container[str] | None = None,
    bar_width: int = 100,
) -> list[PoolRow]:
    """A row per pool of ``pools`` (name → ``as_dict()``), in their order.

    ``actions``: the buttons of each row (none for a viewer); ``linked``: the
    pools whose name links to their page (None: every pool), which leaves out
    pools that another process has and this one does not.
    """
    rows = []
    for name, metrics in pools.items():
        rows.append(
            PoolRow(
                metrics=metrics,
                url=admin_url(site, "change", name) if linked is None or name in linked else "",
                # utilization_bar escapes the one text it draws.
                bar=mark_safe(
                    utilization_bar(float(metrics.get("utilization", 0.0)), width=bar_width)
                ),
                state=pool_state(metrics),
                since=_since(metrics),
                actions=[
                    ActionButton(admin_url(site, a.slug, name), a.label, a.help, a.slug)
                    for a in actions
                ],
            )
        )
    return rows
