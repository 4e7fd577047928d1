"""What the debug-toolbar panel records of one request: statements, checkouts, transactions.

:class:`Recording` is one request's record, filled by the engine listeners of
:mod:`.listeners` while the request runs and read once, as plain data the
toolbar can store, by :meth:`Recording.stats`. It is reached through a context
variable (:data:`current`), so a request served concurrently, in another
thread or asyncio task, records into its own and never sees another's.
"""

from __future__ import annotations

import os
import sys
from contextvars import ContextVar
from time import perf_counter
from typing import Any

import sqlalchemy
from debug_toolbar.utils import get_stack_trace

import mingus_sessions

__all__ = ["MAX_STATEMENTS", "PARAMETERS_SHOWN", "Recording", "current", "empty_stats"]

#: Statements kept per request; past it they are counted and timed, not listed
#: (the toolbar keeps the last RESULTS_CACHE_SIZE requests in memory).
MAX_STATEMENTS = 2000
#: Characters kept of a statement's parameters (when LOG_QUERY_PARAMETERS allows them).
PARAMETERS_SHOWN = 2000

#: The request being recorded. Outside the registry on purpose: its value belongs
#: to the thread or asyncio task that serves one request, not to the process.
current: ContextVar[Recording | None] = ContextVar(
    "mingus_sessions_toolbar_recording", default=None
)

#: A pool's engine, or the joined engine of that pool on Django's connection.
Source = tuple[str, bool]

# Frames of these files are left out of the stack traces shown (as the
# toolbar's HIDE_IN_STACKTRACES leaves out Django's database layer): the two
# packages' directories, and the functions SQLAlchemy generates at run time.
_LIBRARY_FILES = (
    *(
        os.path.dirname(module.__file__) + os.sep
        for module in (sqlalchemy, mingus_sessions)
        if module.__file__
    ),
    "<sqlalchemy generated",
)


def empty_stats() -> dict[str, Any]:
    """The stats of a request that ran no SQLAlchemy work (never an empty dict).

    The toolbar reads a panel whose stored stats are empty as a panel that
    was off for the request, so there is always something.
    """
    return {
        "count": 0,
        "time_ms": 0.0,
        "pools": [],
        "statements": [],
        "transactions": [],
        "checkouts": [],
        "dropped": 0,
        "parameters": False,
    }


class Recording:
    """One request's SQLAlchemy work, as the engine listeners saw it."""

    def __init__(self, *, log_parameters: bool, hidden: tuple[str, ...]) -> None:
        self.started = perf_counter()
        #: Whether bound parameters may be kept (LOG_QUERY_PARAMETERS).
        self.log_parameters = log_parameters
        #: Modules whose frames are not "where" a statement ran.
        self._hidden = hidden
        self.statements: list[dict[str, Any]] = []
        self.transactions: list[dict[str, Any]] = []
        self.checkouts: list[dict[str, Any]] = []
        self.dropped = 0
        self.dropped_ms = 0.0
        #: Statements running now, by execution context (by cursor without one):
        #: their start, and their record (None once MAX_STATEMENTS are listed).
        self._running: dict[int, tuple[float, dict[str, Any] | None]] = {}
        #: Transactions open now: id(Connection) -> (record, open savepoints).
        self._open: dict[int, tuple[dict[str, Any], list[dict[str, Any]]]] = {}
        #: Statements of a Connection with no transaction open: run by another
        #: ``begin`` listener before this one (SQLite's BEGIN), so the
        #: transaction that begins next on that Connection adopts them.
        self._loose: dict[int, list[dict[str, Any]]] = {}

    # -- where the work came from ------------------------------------------------------------

    def _where(self) -> dict[str, Any] | None:
        """The innermost frame outside SQLAlchemy, this package and the hidden modules."""
        frame = sys._getframe(1)
        hidden = self._hidden
        while frame is not None:
            module = frame.f_globals.get("__name__", "")
            if not any(module == name or module.startswith(name + ".") for name in hidden):
                code = frame.f_code
                return {"file": code.co_filename, "line": frame.f_lineno, "function": code.co_name}
            frame = frame.f_back  # type: ignore[assignment]
        return None

    @staticmethod
    def _stack() -> list[Any]:
        """The toolbar's stack trace (empty unless ENABLE_STACKTRACES), without library frames."""
        return [entry for entry in get_stack_trace() if not entry[0].startswith(_LIBRARY_FILES)]

    def _now(self) -> float:
        return perf_counter() - self.started

    # -- statements --------------------------------------------------------------------------

    def before_cursor_execute(
        self,
        source: Source,
        conn: Any,
        cursor: Any,
        statement: str,
        parameters: Any,
        context: Any,
        executemany: bool,
    ) -> None:
        start = perf_counter()
        key = id(cursor) if context is None else id(context)
        if len(self.statements) >= MAX_STATEMENTS:
            self._running[key] = (start, None)
            return
        opened = self._open.get(id(conn))
        record: dict[str, Any] = {
            "pool": source[0],
            "joined": source[1],
            "sql": statement,
            "many": bool(executemany),
            "start_ms": (start - self.started) * 1000,
            "duration_ms": None,
            "error": None,
            "transaction": None if opened is None else opened[0]["index"],
            "where": self._where(),
            "stacktrace": self._stack(),
        }
        if self.log_parameters:
            shown = repr(parameters)
            if len(shown) > PARAMETERS_SHOWN:
                shown = shown[:PARAMETERS_SHOWN] + "…"
            record["parameters"] = shown
        if opened is not None:
            opened[0]["statements"] += 1
        else:
            self._loose.setdefault(id(conn), []).append(record)
        self.statements.append(record)
        self._running[key] = (start, record)

    def _finish(self, key: int, error: str | None) -> None:
        running = self._running.pop(key, None)
        if running is None:
            return  # began before this request was recorded
        start, record = running
        elapsed = (perf_counter() - start) * 1000
        if record is None:
            self.dropped += 1
            self.dropped_ms += elapsed
            return
        record["duration_ms"] = elapsed
        record["error"] = error

    def after_cursor_execute(
        self,
        source: Source,
        conn: Any,
        cursor: Any,
        statement: str,
        parameters: Any,
        context: Any,
        executemany: bool,
    ) -> None:
        self._finish(id(cursor) if context is None else id(context), None)

    def handle_error(self, source: Source, context: Any) -> None:
        # Statements without an execution context fail without one here too
        # (SQLAlchemy does not hand the cursor over): they stay unfinished.
        if context.execution_context is not None:
            error = type(context.original_exception).__name__
            self._finish(id(context.execution_context), error)

    # -- checkouts ---------------------------------------------------------------------------

    def checkout(self, source: Source, wait: float | None) -> None:
        """A connection checked out of ``source``'s pool after ``wait`` seconds (None: unknown)."""
        self.checkouts.append(
            {
                "pool": source[0],
                "start_ms": self._now() * 1000,
                "wait_ms": None if wait is None else wait * 1000,
                "where": self._where(),
            }
        )

    # -- transactions and savepoints ---------------------------------------------------------

    def begin(self, source: Source, conn: Any) -> None:
        record: dict[str, Any] = {
            "index": len(self.transactions),
            "pool": source[0],
            "joined": source[1],
            "start_ms": self._now() * 1000,
            "duration_ms": None,
            "outcome": "open",
            "statements": 0,
            "savepoints": [],
            "where": self._where(),
            "stacktrace": self._stack(),
        }
        adopted = self._loose.pop(id(conn), ())
        for statement in adopted:
            statement["transaction"] = record["index"]
            record["statements"] += 1
            record["start_ms"] = min(record["start_ms"], statement["start_ms"])
        self.transactions.append(record)
        self._open[id(conn)] = (record, [])

    def _end(self, conn: Any, outcome: str) -> None:
        self._loose.pop(id(conn), None)
        opened = self._open.pop(id(conn), None)
        if opened is None:
            return  # began before this request was recorded
        record, savepoints = opened
        record["outcome"] = outcome
        record["duration_ms"] = self._now() * 1000 - record["start_ms"]
        for savepoint in savepoints:
            savepoint["outcome"] = "rolled back" if outcome == "rolled back" else "left open"

    def commit(self, source: Source, conn: Any) -> None:
        self._end(conn, "committed")

    def rollback(self, source: Source, conn: Any) -> None:
        self._end(conn, "rolled back")

    def savepoint(self, source: Source, conn: Any, name: str | None) -> None:
        opened = self._open.get(id(conn))
        if opened is None:
            return
        # SQLAlchemy names the savepoint after this event: the name comes at its end.
        savepoint: dict[str, Any] = {"name": name, "outcome": "open", "where": self._where()}
        opened[0]["savepoints"].append(savepoint)
        opened[1].append(savepoint)

    def _end_savepoint(self, conn: Any, name: str, outcome: str) -> None:
        opened = self._open.get(id(conn))
        if opened is None or not opened[1]:
            return
        savepoint = opened[1].pop()
        savepoint["name"] = name
        savepoint["outcome"] = outcome

    def release_savepoint(self, source: Source, conn: Any, name: str, context: Any) -> None:
        self._end_savepoint(conn, name, "released")

    def rollback_savepoint(self, source: Source, conn: Any, name: str, context: Any) -> None:
        self._end_savepoint(conn, name, "rolled back")

    # -- what the toolbar stores -------------------------------------------------------------

    def stats(self, slow_ms: float) -> dict[str, Any]:
        """Everything recorded, as plain data (JSON-ready) for the toolbar's store.

        ``slow_ms`` is the toolbar's SQL_WARNING_THRESHOLD: statements that took
        longer are flagged as its SQL panel flags queries.
        """
        statements = [dict(record) for record in self.statements]
        for record in statements:
            duration = record["duration_ms"]
            record["is_slow"] = duration is not None and duration > slow_ms
        _place_on_timeline(statements)
        time_ms = sum(r["duration_ms"] or 0.0 for r in statements) + self.dropped_ms
        return {
            "count": len(statements) + self.dropped,
            "time_ms": time_ms,
            "pools": _per_pool(statements, self.transactions, self.checkouts),
            "statements": statements,
            "transactions": [dict(record) for record in self.transactions],
            "checkouts": list(self.checkouts),
            "dropped": self.dropped,
            "parameters": self.log_parameters,
        }


def _place_on_timeline(statements: list[dict[str, Any]]) -> None:
    """Each statement's start and length in percent of the span from the first to the last."""
    if not statements:
        return
    first = min(r["start_ms"] for r in statements)
    last = max(r["start_ms"] + (r["duration_ms"] or 0.0) for r in statements)
    span = (last - first) or 1.0
    for record in statements:
        record["offset_pct"] = (record["start_ms"] - first) / span * 100
        record["width_pct"] = max((record["duration_ms"] or 0.0) / span * 100, 0.5)


def _per_pool(
    statements: list[dict[str, Any]],
    transactions: list[dict[str, Any]],
    checkouts: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """One summary per pool (and per pool's joined engine) that did anything, busiest first."""
    pools: dict[tuple[str, bool], dict[str, Any]] = {}

    def summary(pool: str, joined: bool) -> dict[str, Any]:
        found = pools.get((pool, joined))
        if found is None:
            found = pools[(pool, joined)] = {
                "pool": pool,
                "joined": joined,
                "statements": 0,
                "time_ms": 0.0,
                "transactions": 0,
                "checkouts": 0,
                "waits_measured": 0,
                "wait_ms": 0.0,
                "max_wait_ms": 0.0,
            }
        return found

    for record in statements:
        found = summary(record["pool"], record["joined"])
        found["statements"] += 1
        found["time_ms"] += record["duration_ms"] or 0.0
    for record in transactions:
        summary(record["pool"], record["joined"])["transactions"] += 1
    for record in checkouts:
        found = summary(record["pool"], False)
        found["checkouts"] += 1
        if record["wait_ms"] is not None:
            found["waits_measured"] += 1
            found["wait_ms"] += record["wait_ms"]
            found["max_wait_ms"] = max(found["max_wait_ms"], record["wait_ms"])
    return sorted(pools.values(), key=lambda found: (-found["time_ms"], found["pool"]))
