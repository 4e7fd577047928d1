"""Real faults inside session_scope: exhaustion, pools of one, BaseException, data errors, threads.

No mocks: the pools are real, the timeouts are real, the exceptions are raised
inside real scopes on the test database.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import text

from mingus_sessions import PoolExhaustedError, SessionError, execute_with_retry, session_scope
from mingus_sessions._core.state import state
from tests.scopes.helpers import BACKEND, Boom, checked_out, db, insert, titles, with_pools


class Abort(BaseException):
    """A BaseException that is not an Exception, like GeneratorExit or a task's hard stop."""


# -- R5: pool exhausted ---------------------------------------------------------------------------

TINY = {"DATABASE": "default", "POOL_SIZE": 2, "MAX_OVERFLOW": 0, "POOL_TIMEOUT": 1}


class Holders:
    """Two threads that each hold a scope of pool "tiny" with a query run, until released."""

    def __init__(self) -> None:
        self.holding = threading.Barrier(3)
        self.release = threading.Event()
        self.errors: list[BaseException] = []
        self.threads = [threading.Thread(target=self._hold) for _ in range(2)]

    def _hold(self) -> None:
        try:
            with session_scope("tiny") as session:
                session.execute(text("SELECT 1"))
                self.holding.wait(10)
                self.release.wait(10)
        except BaseException as exc:
            self.errors.append(exc)

    def __enter__(self) -> Holders:
        for thread in self.threads:
            thread.start()
        self.holding.wait(10)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release.set()
        for thread in self.threads:
            thread.join(10)
        assert self.errors == []


def exhaust() -> tuple[PoolExhaustedError, float]:
    """Hold both connections of "tiny" and open a third scope: its error and its wait."""
    with Holders():
        assert checked_out("tiny") == 2
        started = time.monotonic()
        with pytest.raises(PoolExhaustedError) as info, session_scope("tiny") as session:
            session.execute(text("SELECT 1"))
        waited = time.monotonic() - started
    return info.value, waited


@db
def test_pool_exhausted_after_timeout(settings: Any) -> None:
    """R5: with both connections held, a third scope gets PoolExhaustedError after ~1 s."""
    with_pools(settings, tiny=TINY)
    error, waited = exhaust()
    assert 1.0 <= waited < 1.5
    message = str(error)
    assert '"tiny"' in message
    assert "size 2" in message
    assert "checked out 2" in message
    assert "overflow 0 of 0" in message
    assert "waiters" in message
    assert "Every connection is in use" in message  # full, not unreachable
    assert error.pool == "tiny"
    assert error.transient is True
    assert isinstance(error.__cause__, sa_exc.TimeoutError)
    assert state.sessions.failed_sessions == 1
    assert state.sessions.active_sessions == 0
    assert checked_out("tiny") == 0


@db
def test_pool_exhausted_while_database_unreachable_chains_the_connect_failure(
    settings: Any, tmp_path: Any
) -> None:
    """R5: when the last connect had failed, the error says unreachable and chains that failure."""
    import sqlite3

    from mingus_sessions.engines import get_entry

    with_pools(settings, tiny=TINY)
    # A real driver failure to open a database: a directory is not a database file.
    with pytest.raises(sqlite3.OperationalError) as refused:
        sqlite3.connect(str(tmp_path), uri=False).execute("SELECT 1")
    with Holders():
        # The holders' connects succeeded; then the database went away.
        get_entry("tiny").probe.connect_failed(refused.value)
        with pytest.raises(PoolExhaustedError) as info, session_scope("tiny") as session:
            session.execute(text("SELECT 1"))
    error = info.value
    assert "The database itself looks unreachable" in str(error)
    assert "unable to open database file" in str(error)
    assert error.unreachable is True
    assert isinstance(error.__cause__, sa_exc.TimeoutError)
    assert error.__cause__.__cause__ is refused.value


@db
def test_past_max_waiting_a_scope_is_refused_at_once(settings: Any) -> None:
    """R5: with MAX_WAITING callers already in line, the next scope fails now, saying so."""
    with_pools(settings, tiny={**TINY, "POOL_TIMEOUT": 10, "MAX_WAITING": 1})
    waiter_errors: list[BaseException] = []

    def wait_in_line() -> None:
        try:
            with session_scope("tiny") as session:
                session.execute(text("SELECT 1"))
        except BaseException as exc:
            waiter_errors.append(exc)

    with Holders():
        waiter = threading.Thread(target=wait_in_line)
        waiter.start()
        probe = state.pools["tiny"].probe
        deadline = time.monotonic() + 10
        while probe.waiting < 1 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert probe.waiting == 1
        started = time.monotonic()
        with pytest.raises(PoolExhaustedError) as info, session_scope("tiny") as session:
            session.execute(text("SELECT 1"))
        refused_after = time.monotonic() - started
    waiter.join(10)
    assert waiter_errors == []  # the one in line was served once the holders let go
    assert refused_after < 0.5
    message = str(info.value)
    assert "queue was full: 1 caller already waited" in message
    assert "MAX_WAITING (1)" in message
    assert info.value.transient is True
    assert probe.timeouts == 1
    assert checked_out("tiny") == 0


@db
def test_pool_serves_again_after_exhaustion(settings: Any) -> None:
    """R5: once the holders let go, the exhausted pool serves both its connections again."""
    with_pools(settings, tiny=TINY)
    exhaust()
    assert checked_out("tiny") == 0
    with session_scope("tiny") as first, session_scope("tiny", independent=True) as second:
        assert first is not second
        assert first.execute(text("SELECT 1")).scalar() == 1
        assert second.execute(text("SELECT 2")).scalar() == 2
        assert checked_out("tiny") == 2
    assert checked_out("tiny") == 0


@db
def test_connection_returned_by_one_thread_serves_another(settings: Any) -> None:
    """A pooled connection that one thread opened and returned works in the next thread's scope."""
    with_pools(settings, single={**TINY, "POOL_SIZE": 1})
    opened: list[int] = []

    def scope_in_thread() -> None:
        with session_scope("single") as session:
            opened.append(id(session.connection().connection.dbapi_connection))

    worker = threading.Thread(target=scope_in_thread)
    worker.start()
    worker.join(10)
    assert len(opened) == 1
    with session_scope("single") as session:
        assert id(session.connection().connection.dbapi_connection) == opened[0]
        assert session.execute(text("SELECT 1")).scalar() == 1


# -- R6: nested scope on a pool of one ------------------------------------------------------------


@db
def test_nested_scope_on_pool_of_one_never_hangs(settings: Any) -> None:
    """R6: on a pool of one, a scope inside a scope is a savepoint on the same connection."""
    with_pools(
        settings, one={"DATABASE": "default", "POOL_SIZE": 1, "MAX_OVERFLOW": 0, "POOL_TIMEOUT": 1}
    )
    started = time.monotonic()
    with session_scope("one") as outer:
        insert(outer, "outer")
        outer_conn = outer.connection().connection.dbapi_connection
        with session_scope("one") as inner:
            assert inner is outer
            assert inner.connection().connection.dbapi_connection is outer_conn
            insert(inner, "inner")
            with session_scope("one") as deeper:
                insert(deeper, "deeper")
            assert checked_out("one") == 1
    assert time.monotonic() - started < 1.0  # never waited for the pool's timeout
    assert titles("one") == ["deeper", "inner", "outer"]
    assert checked_out("one") == 0
    assert state.sessions.savepoints == 2


# -- R9: BaseException inside a scope -------------------------------------------------------------


@db
@pytest.mark.parametrize(
    "exc_type", [KeyboardInterrupt, SystemExit, GeneratorExit, Abort], ids=lambda t: t.__name__
)
@pytest.mark.parametrize("nested", [False, True], ids=["flat", "in-savepoint"])
def test_base_exception_rolls_back_and_closes(exc_type: type[BaseException], nested: bool) -> None:
    """R9: a BaseException after a write propagates unchanged, rolls back, closes the session."""
    raised = exc_type("stop")

    def write_then_stop() -> None:
        with session_scope() as session:
            insert(session, "outer-write")
            session.execute(text("SELECT 1"))
            if nested:
                with session_scope() as inner:
                    insert(inner, "inner-write")
                    raise raised
            raise raised

    with pytest.raises(exc_type) as info:
        write_then_stop()
    assert info.value is raised
    assert checked_out() == 0
    assert state.sessions.active_sessions == 0
    assert titles() == []
    with session_scope() as session:
        insert(session, "next")
    assert titles() == ["next"]


@db
def test_generator_closed_inside_scope_rolls_back() -> None:
    """R9: closing a generator suspended inside a scope (GeneratorExit) rolls back and closes."""

    def produce() -> Iterator[str]:
        with session_scope() as session:
            insert(session, "from-generator")
            yield "written"
            insert(session, "never")

    generator = produce()
    assert next(generator) == "written"
    assert checked_out() == 1
    generator.close()
    assert checked_out() == 0
    assert state.sessions.active_sessions == 0
    assert titles() == []


@db
def test_cancelled_task_rolls_back_its_scope() -> None:
    """R9: cancelling an asyncio task inside a scope rolls the write back and closes the session."""
    inside = asyncio.Event()

    async def worker() -> None:
        with session_scope() as session:
            insert(session, "cancelled-write")
            inside.set()
            await asyncio.sleep(30)

    async def main() -> None:
        task = asyncio.create_task(worker())
        await asyncio.wait_for(inside.wait(), 10)
        assert checked_out() == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert checked_out() == 0
    assert state.sessions.active_sessions == 0
    assert state.sessions.failed_sessions == 1
    assert titles() == []
    with session_scope() as session:
        insert(session, "next")
    assert titles() == ["next"]


# -- data errors ----------------------------------------------------------------------------------


@db
def test_integrity_error_passes_through_after_rollback() -> None:
    """A duplicate title raises IntegrityError untranslated, and the scope's other writes vanish."""
    with session_scope() as session:
        insert(session, "taken")

    def duplicate() -> None:
        with session_scope() as session:
            insert(session, "fresh-1")
            insert(session, "taken")
            insert(session, "never-reached")

    with pytest.raises(sa_exc.IntegrityError) as info:
        duplicate()
    assert not isinstance(info.value, SessionError)
    assert titles() == ["taken"]
    assert checked_out() == 0
    assert state.sessions.transaction_rollbacks == 1


@db
def test_integrity_error_in_savepoint_keeps_outer_work() -> None:
    """A duplicate title inside a nested scope rolls back that savepoint only; the outer commits."""
    with session_scope() as session:
        insert(session, "taken")

    def duplicate_in_savepoint() -> None:
        with session_scope() as inner:
            insert(inner, "inner")
            insert(inner, "taken")

    with session_scope() as outer:
        insert(outer, "outer")
        with pytest.raises(sa_exc.IntegrityError):
            duplicate_in_savepoint()
        insert(outer, "after")
    assert titles() == ["after", "outer", "taken"]


# -- threads: savepoint failures on a pool smaller than the workers -------------------------------


@db
def test_threaded_nested_failures_on_small_pool(settings: Any) -> None:
    """8 workers on a pool of 2+2, each failing in a savepoint, all finish with exact rows."""
    with_pools(
        settings,
        mid={"DATABASE": "default", "POOL_SIZE": 2, "MAX_OVERFLOW": 2, "POOL_TIMEOUT": 10},
    )
    sessions: list[int] = []
    lock = threading.Lock()

    def work(n: int) -> int:
        with session_scope("mid") as outer:
            insert(outer, f"w{n}-outer")
            try:
                with session_scope("mid") as inner:
                    assert inner is outer
                    insert(inner, f"w{n}-inner")
                    raise Boom
            except Boom:
                pass
            insert(outer, f"w{n}-after")
            time.sleep(0.01)  # hold the connection so that workers wait for each other
            with lock:
                sessions.append(id(outer))
        return n

    def job(n: int) -> int:
        # SQLite's shared-cache test database lets one connection write a table at a
        # time and answers the others "table is locked" (a transient LockTimeoutError)
        # at once: the whole scope is retried, as DESIGN prescribes for transient errors.
        return execute_with_retry(
            lambda: work(n), pool="mid", max_retries=200, base_delay=0.002, max_delay=0.02
        )

    with ThreadPoolExecutor(max_workers=8) as executor:
        done = sorted(executor.map(job, range(8), timeout=60))
    assert done == list(range(8))
    assert len(set(sessions)) >= 1
    assert titles("mid") == sorted(
        [f"w{n}-outer" for n in range(8)] + [f"w{n}-after" for n in range(8)]
    )
    assert checked_out("mid") == 0
    assert state.sessions.active_sessions == 0
    if BACKEND == "postgresql":
        assert state.sessions.retries == 0
