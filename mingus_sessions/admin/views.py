"""What the admin pages show: template contexts built from metric snapshots.

Everything here reads the public metrics API (frozen ``PoolMetrics``
snapshots, the sampler's time series, the fleet view, the recorder's slowest
statements) and never a pool or a table. Nothing shown carries a password or
a URL: a pool is described by its alias, backend name and pool settings, and
statements keep their bound parameters out unless ``LOG_QUERY_PARAMETERS`` is on.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.contrib.admin.utils import quote
from django.urls import reverse
from django.utils.safestring import SafeString, mark_safe

from .. import conf, monitor
from .._core.recorder import PoolRecorder
from .._core.snapshot import PoolMetrics
from ..engines import get_entry
from ..metrics.api import get_pool_metrics, get_session_stats
from .actions import ACTIONS, PoolAction
from .charts import Line, format_ms, format_percent, line_chart, utilization_bar

__all__ = ["admin_url", "dashboard_context", "monitoring_status", "pool_context", "url_name"]

logger = logging.getLogger("mingus_sessions")

_APP = "mingus_sessions"
_MODEL = "connectionpool"


def url_name(what: str) -> str:
    """The admin URL name of one of the pages or actions (``admin:`` namespace not included)."""
    return f"{_APP}_{_MODEL}_{what.replace('-', '_')}"


def admin_url(site: str, what: str, pool: str | None = None) -> str:
    """The URL of a page or action of admin site ``site`` (``pool``: a pool name, unquoted)."""
    args = (quote(pool),) if pool is not None else ()
    return reverse(f"{site}:{url_name(what)}", args=args, current_app=site)


@dataclass(frozen=True, slots=True)
class ActionButton:
    """A POST form on the page: where it goes, its label, what it does."""

    url: str
    label: str
    help: str
    slug: str


@dataclass(frozen=True, slots=True)
class PoolRow:
    """One pool as the pages show it: its snapshot plus links, buttons and a bar."""

    metrics: PoolMetrics
    url: str
    bar: SafeString
    #: When the counters were last reset, for reading (``metrics.since`` is ISO 8601).
    since: str = ""
    actions: list[ActionButton] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class FleetCell:
    utilization: float
    checked_out: int
    capacity: int
    waiting: int
    bar: SafeString


@dataclass(frozen=True, slots=True)
class FleetRow:
    host: str
    pid: int
    role: str
    updated_at: str
    age_s: float
    this_process: bool
    active_sessions: int
    cells: list[FleetCell | None]


def monitoring_status() -> dict[str, Any]:
    """Whether the sampler runs, starting it if it does not (the charts need its series).

    The admin starts it as a web process would on its first request through
    the middleware, so a site without the middleware still gets charts.
    """
    config = conf.get_config()
    status: dict[str, Any] = {
        "enabled": config.monitoring,
        "interval": config.fleet.interval,
        "started_now": False,
        "failed": False,
        "process": f"{socket.gethostname()}:{os.getpid()}",
    }
    if config.monitoring and not monitor.is_monitoring():
        try:
            status["started_now"] = monitor.start_monitoring(role="web")
        except Exception:
            # The fleet cache can be down; the page still shows this process.
            logger.warning("The admin could not start monitoring", exc_info=True)
            status["failed"] = True
    return status


def _buttons(site: str, pool: str, actions: Sequence[PoolAction]) -> list[ActionButton]:
    return [ActionButton(admin_url(site, a.slug, pool), a.label, a.help, a.slug) for a in actions]


def _pool_rows(site: str, pools: dict[str, PoolMetrics], *, can_change: bool) -> list[PoolRow]:
    actions = list(ACTIONS.values()) if can_change else []
    return [
        PoolRow(
            metrics=metrics,
            url=admin_url(site, "change", name),
            bar=mark_safe(utilization_bar(metrics.utilization)),  # escaped in charts
            since=_iso(dt.datetime.fromisoformat(metrics.since).timestamp())
            if metrics.since
            else "",
            actions=_buttons(site, name, actions),
        )
        for name, metrics in pools.items()
    ]


def _fleet(names: Sequence[str], *, pool: str | None = None) -> tuple[list[str], list[FleetRow]]:
    """The fleet as table columns (pool names) and one row per live process."""
    try:
        fleet = monitor.get_fleet_metrics()
    except Exception:
        logger.warning("The admin could not read the fleet", exc_info=True)
        fleet = []
    columns = [pool] if pool is not None else list(names)
    if pool is None:
        seen = {n for process in fleet for n in process.get("pools", {})}
        columns += sorted(seen - set(columns))
    here = (socket.gethostname(), os.getpid())
    now = time.time()
    rows = []
    for process in fleet:
        cells: list[FleetCell | None] = []
        for name in columns:
            found = process.get("pools", {}).get(name)
            if found is None:
                cells.append(None)
                continue
            cells.append(
                FleetCell(
                    utilization=found["utilization"],
                    checked_out=found["checked_out"],
                    capacity=found["capacity"],
                    waiting=found["waiting"],
                    bar=mark_safe(utilization_bar(found["utilization"], width=60)),
                )
            )
        rows.append(
            FleetRow(
                host=str(process["host"]),
                pid=int(process["pid"]),
                role=str(process["role"]),
                updated_at=_iso(float(process["updated_at"])),
                age_s=max(now - float(process["updated_at"]), 0.0),
                this_process=(process["host"], process["pid"]) == here,
                active_sessions=int(process.get("sessions", {}).get("active_sessions", 0)),
                cells=cells,
            )
        )
    return columns, rows


def _iso(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _charts(names: Sequence[str], *, prefix: str) -> list[SafeString]:
    """Utilization and acquire-wait p99 over time, one line per pool, from this process's series."""
    series = monitor.get_time_series()

    def lines(key: str) -> list[Line]:
        return [Line(n, [(p["t"], float(p[key])) for p in series.get(n, [])]) for n in names]

    subject = f"pool {names[0]}" if len(names) == 1 else "each pool"
    specs: list[tuple[str, str, str, str, Callable[[float], str], float | None]] = [
        (
            "utilization",
            "Utilization over time",
            f"Connections checked out as a share of pool size plus overflow, for {subject}, "
            "sampled by this process.",
            "utilization",
            format_percent,
            1.0,
        ),
        (
            "acquire_p99_ms",
            "Acquire wait p99 over time",
            f"99th percentile of the time a checkout waited for a connection in each "
            f"sampling interval, for {subject}, in milliseconds.",
            "acquire wait p99 (ms)",
            format_ms,
            None,
        ),
    ]
    return [
        mark_safe(  # line_chart escapes every text it draws
            line_chart(
                chart_id=f"{prefix}-{key}",
                title=title,
                description=description,
                lines=lines(key),
                y_label=y_label,
                y_format=y_format,
                y_max=y_max,
            )
        )
        for key, title, description, y_label, y_format, y_max in specs
    ]


def dashboard_context(site: str, *, can_change: bool) -> dict[str, Any]:
    """Every pool, the charts, the process's sessions and the fleet."""
    status = monitoring_status()
    pools = get_pool_metrics()
    names = list(pools)
    fleet_columns, fleet_rows = _fleet(names)
    every = [a for a in ACTIONS.values() if a.applies_to_all] if can_change else []
    return {
        "monitoring": status,
        "pools": _pool_rows(site, pools, can_change=can_change),
        "charts": _charts(names, prefix="mingus-all") if names else [],
        "fleet_columns": fleet_columns,
        "fleet": fleet_rows,
        "sessions": get_session_stats(),
        "every_pool_actions": [
            ActionButton(admin_url(site, f"{a.slug}-all"), f"{a.label} (all pools)", a.help, a.slug)
            for a in every
        ],
        "generated_at": _iso(time.time()),
    }


def pool_context(site: str, name: str, *, can_change: bool) -> dict[str, Any]:
    """One pool: its row, its charts, its slowest statements, leaks and its processes."""
    status = monitoring_status()
    metrics = get_pool_metrics(name)
    probe = get_entry(name).probe
    recorder = probe if isinstance(probe, PoolRecorder) else None
    slowest = []
    held: list[float] = []
    if recorder is not None:
        for query in recorder.slowest():
            found = query.as_dict()
            found["at"] = _iso(query.at)
            slowest.append(found)
        held = sorted(recorder.checked_out_for(), reverse=True)
    fleet_columns, fleet_rows = _fleet([name], pool=name)
    row = _pool_rows(site, {name: metrics}, can_change=can_change)[0]
    return {
        "monitoring": status,
        "pool": row,
        "pool_rows": [row],
        "charts": _charts([name], prefix=f"mingus-pool-{quote(name)}"),
        "fleet_columns": fleet_columns,
        "fleet": fleet_rows,
        "recording": recorder is not None,
        "slowest": slowest,
        "slow_threshold": recorder.slow_threshold if recorder else None,
        "leak_threshold": recorder.leak_threshold if recorder else None,
        "held_now": [round(seconds, 1) for seconds in held[:10]],
        "longest_held": round(held[0], 1) if held else None,
        "generated_at": _iso(time.time()),
    }
