"""Slow statements: timed by wrapping the dialect's execute methods, logged, the slowest kept.

:class:`SlowQueryLog` is the part of :class:`~.recorder.PoolRecorder` that
times statements and keeps the :data:`SLOWEST_KEPT` slowest as
:class:`SlowQuery` entries.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable
from time import perf_counter
from typing import Any, Protocol

from sqlalchemy import Engine

__all__ = ["SLOWEST_KEPT", "STATEMENT_CHARS", "SlowQuery", "SlowQueryLog"]

logger = logging.getLogger("mingus_sessions")
slow_logger = logging.getLogger("mingus_sessions.slow_queries")

#: How many of the slowest statements each pool keeps.
SLOWEST_KEPT = 20
#: Statements are cut to this many characters in logs and in the slowest list.
STATEMENT_CHARS = 2000


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


class _SlowState(Protocol):
    """What :class:`SlowQueryLog` reads and writes: :class:`~.recorder.PoolRecorder`'s slots."""

    name: str
    slow_threshold: float | None
    log_parameters: bool
    slow_queries: int
    _slowest: list[SlowQuery]
    _slowest_lock: threading.Lock

    def _statement_ran(self, elapsed: float, statement: str, parameters: Any) -> None: ...

    def _keep_slow(self, elapsed: float, statement: str, parameters: Any) -> None: ...


class SlowQueryLog:
    """Statement timing, the slow-query log lines and the slowest statements of one pool.

    A part of :class:`~.recorder.PoolRecorder`, whose slots hold the state:
    no slot of its own, so the recorder's layout stays one class's.
    """

    __slots__ = ()

    def slowest(self: _SlowState) -> list[SlowQuery]:
        with self._slowest_lock:
            return sorted(self._slowest, reverse=True)

    def _time_statements(self: _SlowState, engine: Engine) -> None:
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

    def _statement_ran(self: _SlowState, elapsed: float, statement: str, parameters: Any) -> None:
        """Log and keep a statement that took ``elapsed`` s, past the slow threshold."""
        if self.slow_threshold is None or elapsed < self.slow_threshold:
            return
        try:
            self._keep_slow(elapsed, statement, parameters)
        except Exception:
            logger.debug("Slow-query accounting of pool %s failed", self.name, exc_info=True)

    def _keep_slow(self: _SlowState, elapsed: float, statement: str, parameters: Any) -> None:
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
