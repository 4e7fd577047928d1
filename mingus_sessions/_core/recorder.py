"""Per-pool metrics, kept by SQLAlchemy pool and engine events.

Plain Python over SQLAlchemy. :class:`PoolRecorder` extends the pool's
:class:`~mingus_sessions.pools.PoolProbe` with counters, fixed-size
histograms, the connections checked out right now (for leak detection, with
:class:`~.leaks.LeakReports`) and the slowest statements (timed by
:class:`~.slow_queries.SlowQueryLog`). :meth:`PoolRecorder.install` registers
its listeners on the ``Engine``, so they survive ``dispose()``. Every listener
swallows its own failures (logged at DEBUG): metrics must never break a user's
transaction.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from threading import get_ident
from time import perf_counter
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.engine.interfaces import ExceptionContext

from .frames import active_scope
from .histogram import Histogram
from .leaks import LeakReports, Site, capture_stack, leak_logger, note_opening
from .pools import PoolProbe, WaitAwareQueuePool
from .slow_queries import SLOWEST_KEPT, SlowQuery, SlowQueryLog
from .telemetry import PoolTelemetry

# A checkout outside a scope calls capture_stack through this module's globals,
# so a test can replace it here; note_opening, SLOWEST_KEPT and SlowQuery keep
# the import path they had before leaks.py and slow_queries.py were split off.
__all__ = ["SLOWEST_KEPT", "PoolRecorder", "SlowQuery", "capture_stack", "note_opening"]

logger = logging.getLogger("mingus_sessions")

_CONNECT_T0 = "mingus_sessions.connect_t0"

# Bound once: ``active_scope.get`` would create a bound method on every checkout.
_current_scope = active_scope.get


def _guarded(pool: str, listener: Callable[..., None]) -> Callable[..., None]:
    """Run ``listener``; a failure is logged, never raised into the caller's work."""

    def guarded(*args: Any) -> None:
        try:
            listener(*args)
        except Exception:
            logger.debug(
                "Metrics listener %s of pool %s failed", listener.__name__, pool, exc_info=True
            )

    guarded.__name__ = listener.__name__
    return guarded


class PoolRecorder(PoolProbe, LeakReports, SlowQueryLog):
    """Counters, distributions and live checkouts of one named pool."""

    __slots__ = (
        "_outstanding",
        "_slowest",
        "_slowest_lock",
        "checkouts",
        "closed",
        "connect_errors",
        "connect_time",
        "connects",
        "health_thread",
        "hold",
        "invalidations",
        "leak_threshold",
        "leaks",
        "log_parameters",
        "opened",
        "peak_in_use",
        "since",
        "slow_queries",
        "slow_threshold",
        "telemetry",
    )

    def __init__(
        self,
        name: str,
        *,
        leak_threshold: float | None = 30.0,
        slow_threshold: float | None = 1.0,
        log_parameters: bool = False,
    ) -> None:
        super().__init__(name)
        self.leak_threshold = leak_threshold
        self.slow_threshold = slow_threshold
        self.log_parameters = log_parameters
        self.acquire = Histogram()
        self.hold = Histogram()
        self.connect_time = Histogram()
        #: The connections checked out now: id(record) -> [perf_counter at checkout,
        #: site, reported as a leak yet]. A list, the cheapest mutable record.
        self._outstanding: dict[int, list[Any]] = {}
        self._slowest: list[SlowQuery] = []
        self._slowest_lock = threading.Lock()
        #: The thread id of a health check's ping while it runs (0 otherwise): its
        #: checkout is not traffic, so it counts as no checkout, wait or hold.
        self.health_thread = 0
        #: Told of each connection's create, wait and use times (OpenTelemetry), or None.
        self.telemetry: PoolTelemetry | None = None
        self._zero()

    def _zero(self) -> None:
        self.connects = 0
        self.connect_errors = 0
        self.checkouts = 0
        self.invalidations = 0
        self.leaks = 0
        self.slow_queries = 0
        self.timeouts = 0
        self.queued = 0
        self.opened = 0
        self.closed = 0
        self.peak_in_use = len(self._outstanding)
        self.since = time.time()

    def reset(self) -> None:
        """Zero the counters and distributions; live gauges (in use, open) are kept."""
        opened, closed = self.opened, self.closed
        self._zero()
        self.opened, self.closed = opened, closed
        assert self.acquire is not None
        self.acquire.reset()
        self.hold.reset()
        self.connect_time.reset()
        with self._slowest_lock:
            self._slowest = []

    def after_fork(self) -> None:
        """A forked child starts with no connection and no history of its own."""
        super().after_fork()
        self._outstanding = {}
        self._slowest_lock = threading.Lock()
        self.reset()
        self.opened = self.closed = 0

    # -- what the snapshot reads ------------------------------------------------------------

    @property
    def in_use(self) -> int:
        """Connections checked out now (the checkout listener saw them go, not yet back)."""
        return len(self._outstanding)

    # -- listeners --------------------------------------------------------------------------

    def install(self, engine: Engine) -> None:
        """Register the metric listeners on ``engine`` (they survive ``dispose()``)."""
        name = self.name
        for target, identifier, listener in (
            (engine, "do_connect", self._on_do_connect),
            (engine, "connect", self._on_connect),
            (engine, "invalidate", self._on_invalidate),
            (engine, "soft_invalidate", self._on_invalidate),
            (engine, "close", self._on_close),
            (engine, "close_detached", self._on_close_detached),
            (engine, "handle_error", self._on_error),
        ):
            event.listen(target, identifier, _guarded(name, listener))
        if not isinstance(engine.pool, WaitAwareQueuePool):
            # The queue pool reports its checkouts and checkins itself (no event
            # dispatch on the hot path); any other pool class through its events.
            # The two listeners guard themselves: no wrapper call.
            event.listen(engine, "checkout", self._on_checkout)
            event.listen(engine, "checkin", self._on_checkin)
        # Connection.detach() gives the pool's slot back without a checkin event:
        # for the metrics, the pool's hold on that connection ends there.
        event.listen(engine, "detach", self._on_checkin)
        if self.slow_threshold is not None:
            self._time_statements(engine)

    def _on_do_connect(self, dialect: Any, record: Any, cargs: Any, cparams: Any) -> None:
        record.info[_CONNECT_T0] = time.perf_counter()

    def _on_connect(self, dbapi_connection: Any, record: Any) -> None:
        self.connects += 1
        self.opened += 1
        started = record.info.pop(_CONNECT_T0, None)
        if started is not None:
            took = time.perf_counter() - started
            self.connect_time.record(int(took * 1_000_000))
            if self.telemetry is not None:
                self.telemetry.connection_created(took)

    def _on_checkout(self, dbapi_connection: Any, record: Any, proxy: Any) -> None:
        self.checked_out(record, None)

    def _on_checkin(self, dbapi_connection: Any, record: Any) -> None:
        self.checked_in(record)

    def checked_out(self, record: Any, started: float | None) -> None:
        """``record`` was handed out; ``started``: when its caller asked (``perf_counter``)."""
        try:
            now = perf_counter()  # the acquire wait's end and the hold time's start
            # An attribute test, no call, unless a health check's ping is running.
            if self.health_thread and self.health_thread == get_ident():
                return  # the ping's own checkout: no traffic, not held by anyone's code
            self.checkouts += 1
            if started is not None:
                self.acquire.record(int((now - started) * 1_000_000))  # type: ignore[union-attr]
                if self.telemetry is not None:
                    self.telemetry.connection_waited(now - started)
            site: Site | None = None
            if self.leak_threshold is not None:
                # A scope noted where it opened its session (note_opening);
                # anything else (get_session(), engine.connect()) pays for a walk
                # of the stack here.
                name = self.name
                frame = _current_scope()
                while frame is not None and frame.pool != name:
                    frame = frame.parent
                site = frame.opened_at if frame is not None else None
                if site is None:
                    site = capture_stack(sys._getframe(1))
            outstanding = self._outstanding
            outstanding[id(record)] = [now, site, False]
            if len(outstanding) > self.peak_in_use:
                self.peak_in_use = len(outstanding)
        except Exception:
            logger.debug("Metrics listener of pool %s failed", self.name, exc_info=True)

    def checked_in(self, record: Any) -> None:
        """``record`` came back to the pool (or was detached from it)."""
        try:
            out = self._outstanding.pop(id(record), None)
            if out is None:
                return  # checked out before the listener saw it (before a fork)
            held = perf_counter() - out[0]
            self.hold.record(int(held * 1_000_000))
            if self.telemetry is not None:
                self.telemetry.connection_used(held)
            threshold = self.leak_threshold
            if threshold is not None and held >= threshold:
                if not out[2]:
                    self._report_leak(out, held)
                leak_logger.warning(
                    "Connection of pool %s returned after %.1f s (reported as a leak)",
                    self.name,
                    held,
                )
        except Exception:
            logger.debug("Metrics listener of pool %s failed", self.name, exc_info=True)

    def _on_invalidate(self, dbapi_connection: Any, record: Any, exception: Any) -> None:
        self.invalidations += 1

    def _on_close(self, dbapi_connection: Any, record: Any) -> None:
        self.closed += 1

    def _on_close_detached(self, dbapi_connection: Any) -> None:
        self.closed += 1

    def _on_error(self, context: ExceptionContext) -> None:
        if context.connection is None and context.original_exception is not None:
            self.connect_errors += 1
