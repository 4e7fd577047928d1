"""The fleet as the admin pages show it: every live process, each with its pools.

The processes come from the public :func:`~mingus_sessions.metrics.get_fleet_metrics`
(what each process's sampler published to ``FLEET["CACHE"]``). When that cache
cannot be read the pages say so, rather than showing an empty fleet as if no
process had published.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .. import conf
from ..metrics import get_fleet_metrics
from .links import process_url
from .rows import PoolRow, as_utc, pool_rows

__all__ = ["Fleet", "ProcessRow", "read_fleet"]

logger = logging.getLogger("mingus_sessions")

#: A process whose last publication is older than this many intervals is marked late (the
#: fleet drops it at three).
_LATE_INTERVALS = 2


@dataclass(frozen=True, slots=True)
class ProcessRow:
    """One live process: who it is, when it last published, its sessions and its pools."""

    host: str
    pid: int
    role: str
    #: When it last published: for reading, and ISO 8601 (UTC).
    updated_at: str
    updated_iso: str
    age_s: float
    late: bool
    this_process: bool
    sessions: Mapping[str, Any]
    url: str
    pools: list[PoolRow]

    @property
    def label(self) -> str:
        return f"{self.host}:{self.pid}"

    @property
    def clock(self) -> str:
        """The time of day of the last publication (``updated_at`` without the date)."""
        return self.updated_at.split(" ", 1)[-1]

    @property
    def active_sessions(self) -> Any:
        return self.sessions.get("active_sessions", "")


@dataclass(frozen=True, slots=True)
class Fleet:
    """The live processes, or why they could not be read."""

    processes: list[ProcessRow]
    #: The class of the error that kept the fleet cache from being read; "" when it was read.
    error: str
    #: ``FLEET["CACHE"]``, the alias the fleet is read from.
    cache: str
    #: ``FLEET["INTERVAL"]``: how often each process publishes, in seconds.
    interval: float
    #: The one pool shown per process (a pool's page), or "" for all of them.
    only: str = ""

    def find(self, host: str, pid: int) -> ProcessRow | None:
        """The live process ``pid`` on ``host``, or None when it is not in the fleet."""
        for process in self.processes:
            if (process.host, process.pid) == (host, pid):
                return process
        return None


def _ordered(pools: Mapping[str, Any], names: Sequence[str]) -> dict[str, Mapping[str, Any]]:
    """The pools of ``pools`` with the names in ``names`` first, in that order, then the rest."""
    first = [n for n in names if n in pools]
    rest = sorted(n for n in pools if n not in first)
    return {name: pools[name] for name in [*first, *rest]}


def read_fleet(site: str, names: Sequence[str], *, pool: str | None = None) -> Fleet:
    """Every live process with its pools (``names`` first; only ``pool`` when given)."""
    config = conf.get_config()
    cache, interval = config.fleet.cache, config.fleet.interval
    try:
        published = get_fleet_metrics()
    except Exception as exc:
        # A down or misconfigured cache: the page says the fleet is unknown, and the log
        # keeps the traceback (the page shows the error's class only, never a location).
        logger.warning("The admin could not read the fleet cache %r", cache, exc_info=True)
        return Fleet([], type(exc).__name__, cache, interval, pool or "")
    here = (socket.gethostname(), os.getpid())
    now = time.time()
    processes = []
    for process in published:
        host, pid = str(process["host"]), int(process["pid"])
        pools = process.get("pools") or {}
        shown = {pool: pools[pool]} if pool is not None and pool in pools else {}
        updated = float(process["updated_at"])
        age = max(now - updated, 0.0)
        processes.append(
            ProcessRow(
                host=host,
                pid=pid,
                role=str(process.get("role", "")),
                updated_at=as_utc(updated),
                updated_iso=dt.datetime.fromtimestamp(updated, tz=dt.UTC).isoformat(),
                age_s=age,
                late=age > interval * _LATE_INTERVALS,
                this_process=(host, pid) == here,
                sessions=process.get("sessions") or {},
                url=process_url(site, host, pid),
                pools=pool_rows(
                    site,
                    shown if pool is not None else _ordered(pools, names),
                    linked=names,
                    bar_width=60,
                ),
            )
        )
    return Fleet(processes, "", cache, interval, pool or "")
