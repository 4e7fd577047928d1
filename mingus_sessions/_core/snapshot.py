"""Frozen snapshots of pools: :class:`PoolMetrics`, read through public accessors.

Views, commands and exporters render these; they never reach into a pool.
Queue pools report ``size()``, ``checkedin()``, ``checkedout()`` and
``overflow()`` as SQLAlchemy counts them; other pools report what the recorder
saw (connections in use and open).
"""

from __future__ import annotations

import datetime as dt
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy.pool import QueuePool

from .config import PoolConfig
from .entry import PoolEntry
from .histogram import Percentiles
from .recorder import PoolRecorder
from .state import state

__all__ = ["PoolMetrics", "snapshot"]


@dataclass(frozen=True, slots=True)
class PoolMetrics:
    """One pool at one moment: configuration, gauges, counters, distributions, breaker."""

    name: str
    database: str
    backend: str
    pool_class: str
    pool_size: int
    max_overflow: int
    timeout: float
    recycle: int
    checked_out: int
    checked_in: int
    overflow: int
    waiting: int
    total: int
    capacity: int
    utilization: float
    connects: int
    connect_errors: int
    checkouts: int
    timeouts: int
    invalidations: int
    leaks: int
    slow_queries: int
    acquire_wait_ms: Percentiles = field(default_factory=Percentiles)
    hold_ms: Percentiles = field(default_factory=Percentiles)
    connect_ms: Percentiles = field(default_factory=Percentiles)
    circuit_state: str = "closed"
    since: str = ""
    peak_checked_out: int = 0
    queued: int = 0
    #: For a replica's pool: its primary's pool, what the sampler last found
    #: ("serving", "lagging", "unreachable", "promoted", or "unsampled" before
    #: the first look), and its replay lag in seconds (None when unknown).
    replica_of: str | None = None
    replica_state: str = ""
    replica_lag: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field (percentiles as nested dicts)."""
        return asdict(self)


def _iso(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, tz=dt.UTC).isoformat()


def snapshot(entry: PoolEntry, circuit_state: str) -> PoolMetrics:
    """The current :class:`PoolMetrics` of one registry entry."""
    config = entry.config
    pool = entry.engine.pool
    probe = entry.probe
    recorder = probe if isinstance(probe, PoolRecorder) else None
    # The pool's async engines (one per event loop using it) share its
    # recorder: their connections count with the sync engine's.
    pools = [pool, *(found.engine.sync_engine.pool for found in state.async_entries_of(entry))]
    queues = [each for each in pools if isinstance(each, QueuePool)]
    if isinstance(pool, QueuePool):
        # After a dispose, the pool is a new one: connections still out of the
        # old one are the recorder's only, and still held.
        checked_out = max(
            sum(each.checkedout() for each in queues),
            recorder.in_use if recorder is not None else 0,
        )
        checked_in = sum(each.checkedin() for each in queues)
        overflow = sum(max(each.overflow(), 0) for each in queues)
        total = checked_in + checked_out
    elif recorder is not None:
        checked_out = max(recorder.in_use, 0)
        total = max(recorder.opened - recorder.closed, checked_out)
        checked_in = total - checked_out
        overflow = 0
    else:
        checked_out = checked_in = overflow = total = 0
    # Only a queue pool has a limit: a NullPool opens a connection per checkout
    # (the limit is PgBouncer's), a StaticPool shares one. 0 says "no limit".
    capacity = config.capacity * len(queues) if isinstance(pool, QueuePool) else 0
    empty = Percentiles()
    return PoolMetrics(
        name=entry.name,
        database=config.database,
        backend=entry.spec.backend,
        pool_class=type(pool).__name__,
        pool_size=config.pool_size,
        max_overflow=config.max_overflow,
        timeout=config.timeout,
        recycle=config.recycle,
        checked_out=checked_out,
        checked_in=checked_in,
        overflow=overflow,
        waiting=max(probe.waiting, 0),
        total=total,
        capacity=capacity,
        utilization=min(checked_out / capacity, 1.0) if capacity else 0.0,
        connects=recorder.connects if recorder else 0,
        connect_errors=recorder.connect_errors if recorder else 0,
        checkouts=recorder.checkouts if recorder else 0,
        timeouts=probe.timeouts,
        invalidations=recorder.invalidations if recorder else 0,
        leaks=recorder.leaks if recorder else 0,
        slow_queries=recorder.slow_queries if recorder else 0,
        acquire_wait_ms=recorder.acquire.percentiles() if recorder and recorder.acquire else empty,
        hold_ms=recorder.hold.percentiles() if recorder else empty,
        connect_ms=recorder.connect_time.percentiles() if recorder else empty,
        circuit_state=circuit_state,
        since=_iso(recorder.since) if recorder else "",
        peak_checked_out=max(recorder.peak_in_use, checked_out) if recorder else checked_out,
        queued=probe.queued,
        **_replica_fields(config),
    )


def _replica_fields(config: PoolConfig) -> dict[str, Any]:
    """``replica_of``, ``replica_state`` and ``replica_lag`` of a replica's pool ({} otherwise)."""
    primary = config.replica_of
    if primary is None:
        return {}
    router = state.replica_routers.get(primary)
    found = router.statuses.get(config.name) if router is not None else None
    if found is None or found.reachable is None:
        return {"replica_of": primary, "replica_state": "unsampled"}
    lag = found.lag_now(time.monotonic()) if found.reachable else None
    if not found.reachable:
        replica_state = "unreachable"
    elif not found.in_recovery:
        replica_state = "promoted"
    elif lag is None or lag > config.max_replica_lag:
        replica_state = "lagging"
    else:
        replica_state = "serving"
    return {
        "replica_of": primary,
        "replica_state": replica_state,
        "replica_lag": None if lag is None or math.isinf(lag) else round(lag, 3),
    }
