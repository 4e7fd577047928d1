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
from _thread import get_ident
from collections.abc import Callable
from time import perf_counter
from types import CodeType, FrameType
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.engine.interfaces import ExceptionContext

from .frames import Opened, active_scope
from .histogram import Histogram
from .pools import ACQUIRE_STARTED, PoolProbe

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

_CONNECT_T0 = "mingus_sessions.connect_t0"

# Frames in these packages are skipped when recording who checked a connection out.
_LIBRARY_PATHS = tuple(
    module.__file__.rsplit("/", 1)[0]
    for module in (sys.modules["sqlalchemy"], sys.modules["mingus_sessions"])
    if module.__file__
)


class _LibraryFiles(dict[str, bool]):
    """Whether a source file is in SQLAlchemy or this package, by path, learnt as frames come.

    The stack walks below look each frame's file up here: a dict hit, where
    ``str.startswith`` would be a call per frame on every checkout.
    """

    def __missing__(self, filename: str) -> bool:
        inside = self[filename] = filename.startswith(_LIBRARY_PATHS)
        return inside


#: Outside the registry on purpose: what it learns (where a file lives) holds in
#: every process and under any settings, so no fork, change or reset concerns it.
_in_library = _LibraryFiles()


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


#: A stack captured whole, innermost first: (code object, instruction offset) per frame.
Stack = tuple[tuple[CodeType, int], ...]
#: What a checkout remembers of where it came from (see :func:`describe_site`).
Site = Stack | Opened

# Bound once: ``active_scope.get`` would create a bound method on every checkout.
_current_scope = active_scope.get


def note_opening(frame: FrameType | None) -> Opened | None:
    """The first frame from ``frame`` up outside SQLAlchemy and this package.

    This runs for every scope, so it keeps three numbers and walks no further:
    while the scope is open, the frame that opened it is still running, so its
    callers can be read from the thread's live stack if a leak is reported
    (:func:`describe_site`). No frame is kept: it would keep its locals, and
    with them a leaked session and its connection, alive.
    """
    while frame is not None:
        code = frame.f_code
        if not _in_library[code.co_filename]:
            # f_lineno would decode the line table on every call; the offset
            # is free, and is turned into a line only if a leak is reported.
            return (code, frame.f_lasti, get_ident())
        frame = frame.f_back
    return None


def capture_stack(frame: FrameType | None) -> Stack:
    """The frames from ``frame`` up that are outside SQLAlchemy and this package.

    For checkouts outside a scope (``get_session()``, ``engine.connect()``),
    which have no opening frame to come back to: the walk is paid up front.
    """
    found: list[tuple[CodeType, int]] = []
    left = STACK_FRAMES  # counted here: len(found) per frame would be a call per frame
    while frame is not None:
        code = frame.f_code
        if not _in_library[code.co_filename]:
            found.append((code, frame.f_lasti))
            left -= 1
            if not left:
                break
        frame = frame.f_back
    return tuple(found)


def _line_of(code: CodeType, offset: int) -> int:
    for start, end, line in code.co_lines():
        if start <= offset < end and line is not None:
            return line
    return code.co_firstlineno


def _format_frames(frames: Stack) -> str:
    return "\n".join(
        f'  File "{code.co_filename}", line {_line_of(code, offset)}, in {code.co_name}'
        for code, offset in frames
    )


def describe_site(site: Site | None) -> str:
    """The stack a checkout came from, as a traceback's lines (innermost first)."""
    if not site:
        return "  (no caller outside SQLAlchemy)"
    if not isinstance(site[0], CodeType):
        return _format_frames(site)  # type: ignore[arg-type]
    code, offset, thread = site  # type: ignore[misc]
    frames: list[tuple[CodeType, int]] = [(code, offset)]
    running = sys._current_frames().get(thread)
    while running is not None and running.f_code is not code:
        running = running.f_back
    if running is None:
        return (
            _format_frames(tuple(frames))
            + "\n  (that function has returned since, so its callers are not known)"
        )
    # The opening frame is still running, so its callers are still where they
    # were when it opened the session.
    caller = running.f_back
    while caller is not None and len(frames) < STACK_FRAMES:
        if not _in_library[caller.f_code.co_filename]:
            frames.append((caller.f_code, caller.f_lasti))
        caller = caller.f_back
    return _format_frames(tuple(frames))


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
        #: The connections checked out now: id(record) -> [perf_counter at checkout,
        #: site, reported as a leak yet]. A list, the cheapest mutable record.
        self._outstanding: dict[int, list[Any]] = {}
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

    def slowest(self) -> list[SlowQuery]:
        with self._slowest_lock:
            return sorted(self._slowest, reverse=True)

    def checked_out_for(self, now: float | None = None) -> list[float]:
        """Seconds each connection checked out right now has been held."""
        current = time.perf_counter() if now is None else now
        return [current - out[0] for out in list(self._outstanding.values())]

    # -- leak detection -------------------------------------------------------------------

    def scan_leaks(self, now: float | None = None) -> int:
        """Report connections held past the threshold (once each); return how many were new."""
        threshold = self.leak_threshold
        if threshold is None:
            return 0
        current = time.perf_counter() if now is None else now
        found = 0
        for out in list(self._outstanding.values()):
            if not out[2] and current - out[0] >= threshold:
                self._report_leak(out, current - out[0])
                found += 1
        return found

    def _report_leak(self, out: list[Any], held: float) -> None:
        out[2] = True
        self.leaks += 1
        leak_logger.warning(
            "Connection of pool %s held for %.1f s (leak threshold %.1f s); it was checked "
            "out at:\n%s",
            self.name,
            held,
            self.leak_threshold,
            describe_site(out[1]),
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
        # Connection.detach() gives the pool's slot back without a checkin event:
        # for the metrics, the pool's hold on that connection ends there.
        event.listen(engine, "detach", self._on_checkin)
        if self.slow_threshold is not None:
            self._time_statements(engine)

    def _time_statements(self, engine: Engine) -> None:
        """Time each statement by wrapping the execute methods of ``engine``'s dialect.

        ``create_engine`` gives every engine a dialect of its own, so instance
        attributes shadow its methods for this engine only (``joined`` does the
        same). A wrapper is one call per statement; the ``do_execute`` events
        would add SQLAlchemy's listener dispatch on top, which costs more than
        the timing itself, and the cursor events would also switch every
        execution onto SQLAlchemy's slower event-dispatching path. The wrapper
        runs inside SQLAlchemy's error handling, like the method it wraps, and
        reports a statement only once it has run.
        """
        dialect: Any = engine.dialect
        statement_ran = self._statement_ran
        threshold: float = self.slow_threshold  # type: ignore[assignment]

        def timed(method: Callable[..., None]) -> Callable[..., None]:
            def run_timed(cursor: Any, statement: str, parameters: Any, context: Any) -> None:
                started = perf_counter()
                method(cursor, statement, parameters, context)
                elapsed = perf_counter() - started
                if elapsed >= threshold:
                    statement_ran(elapsed, statement, parameters)

            return run_timed

        def run_timed_no_params(cursor: Any, statement: str, context: Any) -> None:
            started = perf_counter()
            execute_no_params(cursor, statement, context)
            elapsed = perf_counter() - started
            if elapsed >= threshold:
                statement_ran(elapsed, statement, None)

        execute_no_params = dialect.do_execute_no_params
        dialect.do_execute = timed(dialect.do_execute)
        dialect.do_executemany = timed(dialect.do_executemany)
        dialect.do_execute_no_params = run_timed_no_params

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
            now = perf_counter()  # the acquire wait's end and the hold time's start
            self.checkouts += 1
            started = record.__dict__.pop(ACQUIRE_STARTED, None)
            if started is not None:
                self.acquire.record(int((now - started) * 1_000_000))  # type: ignore[union-attr]
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
                    site = capture_stack(sys._getframe(2))
            outstanding = self._outstanding
            outstanding[id(record)] = [now, site, False]
            if len(outstanding) > self.peak_in_use:
                self.peak_in_use = len(outstanding)
        except Exception:
            logger.debug("Metrics listener of pool %s failed", self.name, exc_info=True)

    def _on_checkin(self, dbapi_connection: Any, record: Any) -> None:
        try:
            out = self._outstanding.pop(id(record), None)
            if out is None:
                return  # checked out before the listener saw it (before a fork)
            held = perf_counter() - out[0]
            self.hold.record(int(held * 1_000_000))
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

    def _statement_ran(self, elapsed: float, statement: str, parameters: Any) -> None:
        """Log and keep a statement that took ``elapsed`` s, past the slow threshold."""
        if self.slow_threshold is None or elapsed < self.slow_threshold:
            return
        try:
            self._keep_slow(elapsed, statement, parameters)
        except Exception:
            logger.debug("Slow-query accounting of pool %s failed", self.name, exc_info=True)

    def _keep_slow(self, elapsed: float, statement: str, parameters: Any) -> None:
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
