"""Per-pool metrics, kept by SQLAlchemy pool and engine events.

Plain Python over SQLAlchemy. :class:`PoolRecorder` extends the pool's
:class:`~mingus_sessions.pools.PoolProbe` with counters, fixed-size
histograms, the connections checked out right now (for leak detection) and the
slowest statements. :meth:`PoolRecorder.install` registers its listeners on the
``Engine``, so they survive ``dispose()``. Every listener swallows its own
failures (logged at DEBUG): metrics must never break a user's transaction.
"""

from __future__ import annotations

import heapq
import logging
import sys
import threading
import time
from collections.abc import Callable
from types import CodeType, FrameType
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.engine.interfaces import ExceptionContext

from ..pools import PoolProbe
from .histogram import Histogram

__all__ = ["PoolRecorder", "SlowQuery"]

logger = logging.getLogger("mingus_sessions")
leak_logger = logging.getLogger("mingus_sessions.leaks")
slow_logger = logging.getLogger("mingus_sessions.slow_queries")

#: How many of the slowest statements each pool keeps.
SLOWEST_KEPT = 20
#: Statements are cut to this many characters in logs and in the slowest list.
STATEMENT_CHARS = 2000
#: Frames kept of the stack that checked a connection out.
STACK_FRAMES = 10

_OUT = "mingus_sessions.checked_out"
_CONNECT_T0 = "mingus_sessions.connect_t0"

# Frames in these packages are skipped when recording who checked a connection out.
_LIBRARY_PATHS = tuple(
    module.__file__.rsplit("/", 1)[0]
    for module in (sys.modules["sqlalchemy"], sys.modules["mingus_sessions"])
    if module.__file__
)


class SlowQuery:
    """One slow statement: duration (ms), statement, wall-clock time, parameters if allowed."""

    __slots__ = ("at", "duration_ms", "parameters", "statement")

    def __init__(self, duration_ms: float, statement: str, at: float, parameters: str | None):
        self.duration_ms = duration_ms
        self.statement = statement
        self.at = at
        self.parameters = parameters

    def __lt__(self, other: SlowQuery) -> bool:
        return self.duration_ms < other.duration_ms

    def as_dict(self) -> dict[str, Any]:
        found: dict[str, Any] = {
            "duration_ms": round(self.duration_ms, 3),
            "statement": self.statement,
            "at": self.at,
        }
        if self.parameters is not None:
            found["parameters"] = self.parameters
        return found


#: (code object, instruction offset) per frame, innermost first; see :func:`_format_site`.
Site = tuple[tuple[CodeType, int], ...]

#: Where each session was opened, in ``session.info`` (see :func:`capture_site`).
SITE_KEY = "mingus_sessions.opened_at"


class _Checkout:
    """A connection checked out right now: when, from where, and whether reported."""

    __slots__ = ("at", "reported", "site")

    def __init__(self, at: float, site: Site) -> None:
        self.at = at
        self.site = site
        self.reported = False


def capture_site(frame: FrameType | None) -> Site:
    """The frames from ``frame`` up that are outside SQLAlchemy and this package.

    Only (file, line, function) is kept, never a frame: a frame would keep its
    locals, and with them a leaked session and its connection, alive.
    """
    found: list[tuple[CodeType, int]] = []
    while frame is not None and len(found) < STACK_FRAMES:
        code = frame.f_code
        if not code.co_filename.startswith(_LIBRARY_PATHS):
            # f_lineno would decode the line table on every call; the offset
            # is free, and is turned into a line only if a leak is reported.
            found.append((code, frame.f_lasti))
        frame = frame.f_back
    return tuple(found)


def _line_of(code: CodeType, offset: int) -> int:
    for start, end, line in code.co_lines():
        if start <= offset < end and line is not None:
            return line
    return code.co_firstlineno


def _format_site(site: Site) -> str:
    return "\n".join(
        f'  File "{code.co_filename}", line {_line_of(code, offset)}, in {code.co_name}'
        for code, offset in site
    )


_scopes: Any = None  # sessions._active, bound on first use (it imports this module)


def _site_of_checkout(pool: str) -> Site:
    """Where the session checking out was opened, or else the stack right here.

    A session opened by a scope recorded its site when it opened (a short walk
    from the caller); reading it back costs a context lookup. Anything else
    (get_session(), engine.connect()) pays for the full walk here.
    """
    global _scopes
    if _scopes is None:
        from ..sessions import _active

        _scopes = _active
    frame = _scopes.get()
    while frame is not None:
        if frame.pool == pool:
            session = frame._session
            site = session.info.get(SITE_KEY) if session is not None else None
            if site is not None:
                return site  # type: ignore[no-any-return]
            break
        frame = frame.parent
    return capture_site(sys._getframe(3))


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


class PoolRecorder(PoolProbe):
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
        "hold",
        "in_use",
        "invalidations",
        "leak_threshold",
        "leaks",
        "log_parameters",
        "opened",
        "peak_in_use",
        "since",
        "slow_queries",
        "slow_threshold",
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
        self._outstanding: dict[int, _Checkout] = {}
        self._slowest: list[SlowQuery] = []
        self._slowest_lock = threading.Lock()
        self._zero()

    def _zero(self) -> None:
        self.connects = 0
        self.connect_errors = 0
        self.checkouts = 0
        self.invalidations = 0
        self.leaks = 0
        self.slow_queries = 0
        self.timeouts = 0
        self.opened = 0
        self.closed = 0
        self.in_use = 0
        self.peak_in_use = 0
        self.since = time.time()

    def reset(self) -> None:
        """Zero the counters and distributions; live gauges (in use, open) are kept."""
        in_use, opened, closed = self.in_use, self.opened, self.closed
        self._zero()
        self.in_use, self.opened, self.closed = in_use, opened, closed
        self.peak_in_use = in_use
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
        self.in_use = self.opened = self.closed = self.peak_in_use = 0

    # -- what the snapshot reads ------------------------------------------------------------

    def slowest(self) -> list[SlowQuery]:
        with self._slowest_lock:
            return sorted(self._slowest, reverse=True)

    def checked_out_for(self, now: float | None = None) -> list[float]:
        """Seconds each connection checked out right now has been held."""
        current = time.perf_counter() if now is None else now
        return [current - out.at for out in list(self._outstanding.values())]

    # -- leak detection -------------------------------------------------------------------

    def scan_leaks(self, now: float | None = None) -> int:
        """Report connections held past the threshold (once each); return how many were new."""
        threshold = self.leak_threshold
        if threshold is None:
            return 0
        current = time.perf_counter() if now is None else now
        found = 0
        for out in list(self._outstanding.values()):
            if not out.reported and current - out.at >= threshold:
                self._report_leak(out, current - out.at)
                found += 1
        return found

    def _report_leak(self, out: _Checkout, held: float) -> None:
        out.reported = True
        self.leaks += 1
        leak_logger.warning(
            "Connection of pool %s held for %.1f s (leak threshold %.1f s); it was checked "
            "out at:\n%s",
            self.name,
            held,
            self.leak_threshold,
            _format_site(out.site) or "  (no caller outside SQLAlchemy)",
        )

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
        # The two listeners of every checkout guard themselves: no wrapper call.
        event.listen(engine, "checkout", self._on_checkout)
        event.listen(engine, "checkin", self._on_checkin)
        if self.slow_threshold is not None:
            self._time_statements(engine)

    def _time_statements(self, engine: Engine) -> None:
        """Time each statement by running it from the dialect's execute events.

        One dialect event per statement, instead of the before/after cursor
        events, which would also switch every execution onto SQLAlchemy's
        slower event-dispatching path. The listener calls the dialect's own
        method, inside SQLAlchemy's error handling, and reports the statement
        only once it has run.
        """
        dialect = engine.dialect

        def timed(method: Callable[..., None]) -> Callable[..., bool]:
            def listener(cursor: Any, statement: str, parameters: Any, context: Any) -> bool:
                started = time.perf_counter()
                method(cursor, statement, parameters, context)
                try:
                    self._statement_ran(time.perf_counter() - started, statement, parameters)
                except Exception:
                    logger.debug("Slow-query accounting failed", exc_info=True)
                return True

            return listener

        def timed_no_params(cursor: Any, statement: str, context: Any) -> bool:
            started = time.perf_counter()
            dialect.do_execute_no_params(cursor, statement, context)
            try:
                self._statement_ran(time.perf_counter() - started, statement, None)
            except Exception:
                logger.debug("Slow-query accounting failed", exc_info=True)
            return True

        event.listen(engine, "do_execute", timed(dialect.do_execute))
        event.listen(engine, "do_executemany", timed(dialect.do_executemany))
        event.listen(engine, "do_execute_no_params", timed_no_params)

    def _on_do_connect(self, dialect: Any, record: Any, cargs: Any, cparams: Any) -> None:
        record.info[_CONNECT_T0] = time.perf_counter()

    def _on_connect(self, dbapi_connection: Any, record: Any) -> None:
        self.connects += 1
        self.opened += 1
        started = record.info.pop(_CONNECT_T0, None)
        if started is not None:
            self.connect_time.record(int((time.perf_counter() - started) * 1_000_000))

    def _on_checkout(self, dbapi_connection: Any, record: Any, proxy: Any) -> None:
        try:
            self.checkouts += 1
            in_use = self.in_use = self.in_use + 1
            if in_use > self.peak_in_use:
                self.peak_in_use = in_use
            site = _site_of_checkout(self.name) if self.leak_threshold is not None else ()
            out = _Checkout(time.perf_counter(), site)
            record.info[_OUT] = out
            self._outstanding[id(record)] = out
        except Exception:
            logger.debug("Metrics listener of pool %s failed", self.name, exc_info=True)

    def _on_checkin(self, dbapi_connection: Any, record: Any) -> None:
        try:
            out = record.info.pop(_OUT, None)
            if out is None:
                return
            self.in_use -= 1
            self._outstanding.pop(id(record), None)
            held = time.perf_counter() - out.at
            self.hold.record(int(held * 1_000_000))
            threshold = self.leak_threshold
            if threshold is not None and held >= threshold:
                if not out.reported:
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

    def _statement_ran(self, elapsed: float, statement: str, parameters: Any) -> None:
        threshold = self.slow_threshold
        if threshold is None or elapsed < threshold:
            return
        self.slow_queries += 1
        text = str(statement)[:STATEMENT_CHARS]
        shown = repr(parameters)[:STATEMENT_CHARS] if self.log_parameters else None
        if shown is None:
            slow_logger.warning("Slow query on pool %s: %.3f s\n%s", self.name, elapsed, text)
        else:
            slow_logger.warning(
                "Slow query on pool %s: %.3f s\n%s\nparameters: %s", self.name, elapsed, text, shown
            )
        entry = SlowQuery(elapsed * 1000.0, text, time.time(), shown)
        with self._slowest_lock:
            if len(self._slowest) < SLOWEST_KEPT:
                heapq.heappush(self._slowest, entry)
            else:
                heapq.heappushpop(self._slowest, entry)
