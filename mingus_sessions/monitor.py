"""The monitoring sampler, and the fleet view it feeds.

One daemon thread per process, started by :func:`start_monitoring` (or by
itself on a server's first request, and in each Celery task process as it
starts (``worker_process_init``) or at its first task, so never before a fork
and never in management commands that do not need it).
Every ``FLEET["INTERVAL"]`` seconds it:

- applies the fleet-wide actions (reset, dispose, reset the breaker) issued
  since its last sample by another process (``pool_reset``, the admin);
- appends a point per pool to a bounded time series (for the admin charts),
  with the acquire-wait p99 of that interval alone;
- reports connections held past ``LEAK_THRESHOLD`` while they are still held;
- publishes this process's snapshot to the cache named in ``FLEET["CACHE"]``
  (:mod:`mingus_sessions.fleet`), with the actions it applied, so that
  :func:`get_fleet_metrics` in any process lists every live process.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import deque
from typing import Any

from . import conf, fleet
from ._core.histogram import quantile_of
from ._core.recorder import PoolRecorder
from ._core.state import state
from .engines import get_entry
from .fleet import get_fleet_metrics

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
#: Action ids a sampler remembers (seen or applied): more than the fleet keeps listed.
ACTIONS_REMEMBERED = 4 * fleet.ACTIONS_KEPT


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
        #: The ids of the fleet's actions this process has seen (None before it first read
        #: them: what was issued before it joined is not its to apply), and of those it
        #: applied, with when; both insertion-ordered and bounded.
        self.seen_actions: dict[str, None] | None = None
        self.applied: dict[str, float] = {}
        #: Guards both: a request thread running an action marks it while this thread samples.
        self.actions_lock = threading.Lock()
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
        return fleet.member(self.host, self.pid)

    def run(self) -> None:
        # start_monitoring() took the first sample; the thread takes the next ones.
        while not self.stop.wait(self.interval):
            try:
                self.tick()
            except Exception:
                logger.warning("Monitoring sample failed", exc_info=True)

    def tick(self) -> None:
        self.take_actions()
        now = time.time()
        pools = fleet.read_pools()
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

    # -- the fleet -------------------------------------------------------------------------

    def take_actions(self) -> None:
        """Apply the fleet's actions issued since the last sample (errors logged, not raised)."""
        try:
            listed = fleet.listed_actions(fleet.fleet_cache())
        except Exception:
            logger.warning("Could not read the fleet's actions", exc_info=True)
            return
        with self.actions_lock:
            if self.seen_actions is None:
                self.seen_actions = dict.fromkeys(action["id"] for action in listed)
                return
            fresh = [action for action in listed if action["id"] not in self.seen_actions]
        for action in fresh:
            self.mark_seen(action["id"])
            try:
                fleet.apply_action(action)
            except Exception:
                logger.warning("Could not apply the fleet action %r", action, exc_info=True)
                continue
            self.note_applied(action["id"])
            logger.info("Applied the fleet action %s (%s) from %s", *_described(action))

    def mark_seen(self, action_id: str) -> None:
        """Never apply ``action_id`` from the list (this process applies it itself, or did)."""
        with self.actions_lock:
            if self.seen_actions is None:
                self.seen_actions = {}
            self.seen_actions[action_id] = None
            while len(self.seen_actions) > ACTIONS_REMEMBERED:
                del self.seen_actions[next(iter(self.seen_actions))]

    def note_applied(self, action_id: str) -> None:
        """Record that this process applied ``action_id``; its next snapshot says so."""
        self.mark_seen(action_id)
        with self.actions_lock:
            self.applied[action_id] = time.time()
            while len(self.applied) > ACTIONS_REMEMBERED:
                del self.applied[next(iter(self.applied))]

    def publish(self, pools: dict[str, Any], now: float) -> None:
        with self.actions_lock:
            applied = dict(self.applied)
        found = fleet.process_snapshot(self.role, pools, now, applied=applied)
        found["host"], found["pid"] = self.host, self.pid
        fleet.publish(fleet.fleet_cache(), found, self.interval)

    def publish_now(self) -> None:
        """Publish a fresh snapshot at once (after an action this process ran itself)."""
        self.publish(fleet.read_pools(), time.time())

    def unpublish(self) -> None:
        fleet.unpublish(fleet.fleet_cache(), self.member)


def _described(action: dict[str, Any]) -> tuple[str, str, str]:
    pools = action.get("pools")
    return (
        "+".join(action["do"]),
        "every pool" if pools is None else ", ".join(pools),
        str(action.get("by", "?")),
    )


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


def sampler() -> _Monitor | None:
    """This process's running sampler, if any (for the surfaces' fleet actions)."""
    found = state.sampler
    return found if isinstance(found, _Monitor) else None


def get_time_series(pool: str | None = None) -> dict[str, list[dict[str, Any]]]:
    """The sampled points of each pool (or of ``pool``), oldest first."""
    monitor = sampler()
    if monitor is None:
        return {}
    return {
        name: list(points)
        for name, points in list(monitor.series.items())
        if pool is None or name == pool
    }
