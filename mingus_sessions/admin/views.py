"""What the admin pages show: template contexts built from metric snapshots.

Everything here reads the public metrics API (``get_pool_metrics()``'s frozen
snapshots, the sampler's time series, the fleet, the recorder's slowest
statements) and never a pool or a table. Nothing shown carries a password or
a URL: a pool is described by its alias, backend name and pool settings, and
statements keep their bound parameters out unless ``LOG_QUERY_PARAMETERS`` is on.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any

from django.contrib.admin.utils import quote
from django.utils.safestring import SafeString, mark_safe

from .. import conf
from .._core.recorder import PoolRecorder
from ..engines import get_entry, pool_names
from ..metrics import get_pool_metrics, get_session_stats
from ..metrics.monitor import get_time_series, is_monitoring, start_monitoring
from .actions import ACTIONS
from .charts import Line, format_ms, format_percent, line_chart
from .fleet import read_fleet
from .links import admin_url, url_name
from .rows import ActionButton, as_utc, pool_rows

__all__ = [
    "admin_url",
    "dashboard_context",
    "monitoring_status",
    "pool_context",
    "process_context",
    "url_name",
]

logger = logging.getLogger("mingus_sessions")

#: The pages refresh themselves at the sampling interval, within these bounds (seconds): not
#: faster than the server can usefully answer, not slower than "a few seconds".
_REFRESH_BOUNDS = (1.0, 5.0)


def monitoring_status() -> dict[str, Any]:
    """Whether the sampler runs, starting it if it does not (the charts need its series).

    The admin starts it as a web process would on its first request through
    the middleware, so a site without the middleware still gets charts.
    """
    config = conf.get_config()
    low, high = _REFRESH_BOUNDS
    status: dict[str, Any] = {
        "enabled": config.monitoring,
        "interval": config.fleet.interval,
        "refresh": min(max(config.fleet.interval, low), high),
        "started_now": False,
        "failed": False,
        "process": f"{socket.gethostname()}:{os.getpid()}",
    }
    if config.monitoring and not is_monitoring():
        try:
            status["started_now"] = start_monitoring(role="web")
        except Exception:
            # The fleet cache can be down; the page still shows this process.
            logger.warning("The admin could not start monitoring", exc_info=True)
            status["failed"] = True
    return status


def _charts(names: Sequence[str], *, prefix: str) -> list[SafeString]:
    """Utilization and acquire-wait p99 over time, one line per pool, from this process's series."""
    series = get_time_series()

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
    """The fleet, this process's pools and charts, its sessions, and the actions."""
    status = monitoring_status()
    pools = {name: metrics.as_dict() for name, metrics in get_pool_metrics().items()}
    names = list(pools)
    actions = list(ACTIONS.values()) if can_change else []
    every = [a for a in actions if a.applies_to_all]
    return {
        "monitoring": status,
        "pools": pool_rows(site, pools, actions=actions),
        "charts": _charts(names, prefix="mingus-all") if names else [],
        "fleet": read_fleet(site, names),
        "sessions": get_session_stats(),
        "every_pool_actions": [
            ActionButton(admin_url(site, f"{a.slug}-all"), f"{a.label} (all pools)", a.help, a.slug)
            for a in every
        ],
        "generated_at": as_utc(time.time()),
    }


def pool_context(site: str, name: str, *, can_change: bool) -> dict[str, Any]:
    """One pool: its row, its charts, its slowest statements, leaks and its processes."""
    status = monitoring_status()
    metrics = get_pool_metrics(name).as_dict()
    probe = get_entry(name).probe
    recorder = probe if isinstance(probe, PoolRecorder) else None
    slowest = []
    held: list[float] = []
    if recorder is not None:
        for query in recorder.slowest():
            found = query.as_dict()
            found["at"] = as_utc(query.at)
            slowest.append(found)
        held = sorted(recorder.checked_out_for(), reverse=True)
    actions = list(ACTIONS.values()) if can_change else []
    row = pool_rows(site, {name: metrics}, actions=actions)[0]
    return {
        "monitoring": status,
        "pool": row,
        "pool_rows": [row],
        "charts": _charts([name], prefix=f"mingus-pool-{quote(name)}"),
        "fleet": read_fleet(site, [name], pool=name),
        "recording": recorder is not None,
        "slowest": slowest,
        "slow_threshold": recorder.slow_threshold if recorder else None,
        "leak_threshold": recorder.leak_threshold if recorder else None,
        "held_now": [round(seconds, 1) for seconds in held[:10]],
        "longest_held": round(held[0], 1) if held else None,
        "generated_at": as_utc(time.time()),
    }


def process_context(site: str, host: str, pid: int) -> dict[str, Any]:
    """One process of the fleet: who it is, its sessions and pools; None when it is not live.

    ``process`` is None when the fleet cache was read and the process is not in it
    (it stopped, or has not published for three intervals), and when the cache
    could not be read (``fleet.error`` says so).
    """
    status = monitoring_status()
    fleet = read_fleet(site, pool_names())
    process = fleet.find(host, pid)
    charts: list[SafeString] = []
    if process is not None and process.this_process and process.pools:
        # Only this process's series are at hand; another process keeps its own.
        charts = _charts([row.metrics["name"] for row in process.pools], prefix="mingus-process")
    return {
        "monitoring": status,
        "fleet": fleet,
        "host": host,
        "pid": pid,
        "process": process,
        "pool_rows": process.pools if process is not None else [],
        "charts": charts,
        "generated_at": as_utc(time.time()),
    }
