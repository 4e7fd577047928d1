"""The monitoring sampler and the fleet view.

One daemon thread per process, started by :func:`start_monitoring` (or by
itself on a server's first request and in a Celery worker's first task, so
never before a fork and never in management commands that do not need it).
Every ``FLEET["INTERVAL"]`` seconds it:

- appends a point per pool to a bounded time series (for the admin charts),
  with the acquire-wait p99 of that interval alone;
- reports connections held past ``LEAK_THRESHOLD`` while they are still held;
- publishes this process's snapshot to the cache named in ``FLEET["CACHE"]``,
  so that :func:`get_fleet_metrics` in any process lists every live process.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import random
import secrets
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from . import conf
from ._core.histogram import quantile_of
from ._core.recorder import PoolRecorder
from ._core.snapshot import PoolMetrics, snapshot
from ._core.state import state
from .breakers import get_circuit_breaker
from .engines import get_entry, pool_names

__all__ = [
    "ensure_monitoring",
    "get_fleet_metrics",
    "get_time_series",
    "is_monitoring",
    "start_monitoring",
    "stop_monitoring",
]

logger = logging.getLogger("mingus_sessions")

#: Points kept per pool: an hour at the default 10 s interval.
SERIES_POINTS = 360
_PREFIX = "mingus_sessions:fleet:"
_INDEX = _PREFIX + "index"
_INDEX_LOCK = _PREFIX + "index-lock"
#: A process that has not published for this many intervals is no longer listed.
STALE_INTERVALS = 3
#: A member re-stamps its index entry after this many intervals...
INDEX_REFRESH_INTERVALS = 10
#: ...and the index forgets members silent for this many (a wide margin over the refresh).
INDEX_PRUNE_INTERVALS = 30
#: Lifetime of the index lock, in whole seconds (Redis and Memcached round timeouts down to
#: seconds): it frees itself this long after a holder that died while holding it.
INDEX_LOCK_LEASE = 5
#: How long a publisher waits for the index lock before it leaves the update to its next tick.
INDEX_LOCK_WAIT = 1.0


class _Monitor:
    def __init__(self, role: str, interval: float) -> None:
        self.role = role
        self.interval = interval
        self.stop = threading.Event()
        self.series: dict[str, deque[dict[str, Any]]] = {}
        #: Per pool: the recorder, its ``since`` and its acquire buckets at the last tick.
        self.previous_buckets: dict[str, tuple[PoolRecorder, float, list[int]]] = {}
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.thread = threading.Thread(target=self.run, name="mingus-monitor", daemon=True)

    def halt(self) -> None:
        """Stop the thread and withdraw this process from the fleet."""
        self.stop.set()
        self.thread.join(timeout=self.interval + 5)
        try:
            self.unpublish()
        except Exception:
            logger.warning("Could not withdraw from the fleet", exc_info=True)

    @property
    def member(self) -> str:
        return f"{self.host}:{self.pid}"

    def run(self) -> None:
        # start_monitoring() took the first sample; the thread takes the next ones.
        while not self.stop.wait(self.interval):
            try:
                self.tick()
            except Exception:
                logger.warning("Monitoring sample failed", exc_info=True)

    def tick(self) -> None:
        now = time.time()
        pools: dict[str, PoolMetrics] = {}
        for name in pool_names():
            try:
                pools[name] = _pool_metrics(name)
            except Exception:
                # One pool that cannot be read (a missing driver) must not stop
                # the others' samples, leak scans and fleet entry.
                logger.warning("Monitoring could not read pool %s", name, exc_info=True)
        for name, metrics in pools.items():
            probe = get_entry(name).probe
            interval_p99 = 0.0
            if isinstance(probe, PoolRecorder) and probe.acquire is not None:
                probe.scan_leaks()
                interval_p99 = quantile_of(self._acquired_since_last_tick(name, probe), 0.99)
                interval_p99 /= 1000.0
            series = self.series.setdefault(name, deque(maxlen=SERIES_POINTS))
            series.append(
                {
                    "t": now,
                    "utilization": round(metrics.utilization, 4),
                    "checked_out": metrics.checked_out,
                    "waiting": metrics.waiting,
                    "acquire_p99_ms": round(interval_p99, 3),
                }
            )
        self.publish(pools, now)

    def _acquired_since_last_tick(self, name: str, recorder: PoolRecorder) -> list[int]:
        """The acquire-wait histogram of what happened since the last tick, bucket by bucket.

        After a reset (``reset_metrics()``, or new engines after a settings
        change) the histogram started again from zero: all of it is new.
        """
        assert recorder.acquire is not None
        buckets = recorder.acquire.buckets()
        previous = self.previous_buckets.get(name)
        self.previous_buckets[name] = (recorder, recorder.since, buckets)
        if previous is None or previous[0] is not recorder or previous[1] != recorder.since:
            return buckets
        delta = [count - before for count, before in zip(buckets, previous[2], strict=True)]
        return buckets if min(delta, default=0) < 0 else delta

    def publish(self, pools: dict[str, Any], now: float) -> None:
        from django.core.cache import caches

        cache = caches[conf.get_config().fleet.cache]
        ttl = self.interval * STALE_INTERVALS
        cache.set(
            _PREFIX + self.member,
            {
                "host": self.host,
                "pid": self.pid,
                "role": self.role,
                "updated_at": now,
                "pools": {name: metrics.as_dict() for name, metrics in pools.items()},
                "sessions": state.sessions.snapshot(),
            },
            timeout=max(ttl, 1.0),
        )
        # The index is written only under its lock (see _change_index), so most ticks just
        # read it: a member rewrites it when it is missing from it (first tick, or the index
        # was evicted) or when its stamp is due, never every tick from every process.
        try:
            seen = (cache.get(_INDEX) or {}).get(self.member)
        except Exception:
            logger.warning("Could not read the fleet index", exc_info=True)
            return
        if seen is not None and now - seen < self.interval * INDEX_REFRESH_INTERVALS:
            return
        horizon = now - self.interval * INDEX_PRUNE_INTERVALS

        def join(index: dict[str, float]) -> dict[str, float] | None:
            index[self.member] = now
            return {member: at for member, at in index.items() if at >= horizon}

        self._change_index(cache, join)

    def unpublish(self) -> None:
        from django.core.cache import caches

        cache = caches[conf.get_config().fleet.cache]
        cache.delete(_PREFIX + self.member)

        def leave(index: dict[str, float]) -> dict[str, float] | None:
            return index if index.pop(self.member, None) is not None else None

        self._change_index(cache, leave)

    def _change_index(
        self, cache: Any, change: Callable[[dict[str, float]], dict[str, float] | None]
    ) -> None:
        """Read, change and write back the fleet index while holding its lock.

        Without the lock, two processes doing this at once each write back a copy lacking
        the other's change, which drops a live member. ``cache.add`` is the atomic primitive
        every Django cache backend has (Redis SET NX, Memcached add, locmem under its lock,
        the database cache's primary key), and its timeout makes the lock a lease: a holder
        that dies frees it after INDEX_LOCK_LEASE. Waiting is bounded; on giving up nothing
        is written (so nobody is dropped) and the next tick tries again. Cache errors are
        logged, never raised.
        """
        token = secrets.token_hex(8)
        try:
            deadline = time.monotonic() + INDEX_LOCK_WAIT
            pause = 0.002
            while True:
                leased = time.monotonic()
                if cache.add(_INDEX_LOCK, token, timeout=INDEX_LOCK_LEASE):
                    break
                if leased >= deadline:
                    logger.warning("The fleet index stayed locked; not updated this time")
                    return
                time.sleep(pause * (0.5 + random.random()))  # jittered: no lockstep retries
                pause = min(pause * 2, 0.05)
            try:
                changed = change(cache.get(_INDEX) or {})
                if changed is None:
                    return
                # A holder stalled past half its lease may have lost the lock to another
                # process; writing its copy now could undo that one's change.
                if time.monotonic() - leased > INDEX_LOCK_LEASE / 2:
                    logger.warning("The fleet index update was too slow; not written")
                    return
                cache.set(_INDEX, changed, timeout=None)
            finally:
                # Release only our own lease: if it lapsed, the lock may be another's now.
                if cache.get(_INDEX_LOCK) == token:
                    cache.delete(_INDEX_LOCK)
        except Exception:
            logger.warning("Could not update the fleet index", exc_info=True)


def _pool_metrics(name: str) -> PoolMetrics:
    return snapshot(get_entry(name), get_circuit_breaker(name).state)


def is_monitoring() -> bool:
    return state.sampler is not None


def start_monitoring(role: str = "process") -> bool:
    """Start this process's sampler; False if already running or ``MONITORING`` is off."""
    config = conf.get_config()
    if not config.monitoring:
        return False
    with state.lock:
        if state.sampler is not None:
            return False
        monitor = _Monitor(role, config.fleet.interval)
        try:
            monitor.tick()  # the first point and the fleet entry at once
        except Exception:
            # The fleet's cache being down, say: the sampler still starts, so
            # leaks are still reported and the next ticks try again.
            logger.warning("Monitoring's first sample failed", exc_info=True)
        monitor.thread.start()
        state.sampler = monitor
    return True


def ensure_monitoring(role: str) -> None:
    """Start the sampler unless it runs (cheap enough to call on every request or task)."""
    if state.sampler is None:
        try:
            start_monitoring(role)
        except Exception:
            logger.warning("Could not start monitoring", exc_info=True)


def stop_monitoring() -> None:
    """Stop the sampler and withdraw this process from the fleet."""
    with state.lock:
        monitor, state.sampler = state.sampler, None
    if monitor is not None:
        monitor.halt()


def get_time_series(pool: str | None = None) -> dict[str, list[dict[str, Any]]]:
    """The sampled points of each pool (or of ``pool``), oldest first."""
    monitor = state.sampler
    if not isinstance(monitor, _Monitor):
        return {}
    return {
        name: list(points)
        for name, points in list(monitor.series.items())
        if pool is None or name == pool
    }


def get_fleet_metrics() -> list[dict[str, Any]]:
    """One dict per live process (host, pid, role, updated_at, pools, sessions)."""
    from django.core.cache import caches

    config = conf.get_config()
    cache = caches[config.fleet.cache]
    ttl = config.fleet.interval * STALE_INTERVALS
    now = time.time()
    index: dict[str, float] = cache.get(_INDEX) or {}
    found = cache.get_many([_PREFIX + member for member in index])
    live = [
        snap
        for snap in found.values()
        if isinstance(snap, dict) and now - float(snap.get("updated_at", 0)) <= ttl
    ]
    for snap in live:
        snap["updated_at_iso"] = dt.datetime.fromtimestamp(
            snap["updated_at"], tz=dt.UTC
        ).isoformat()
    return sorted(live, key=lambda snap: (snap["host"], snap["pid"]))
