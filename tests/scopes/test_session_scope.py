"""The session API: engines, session_scope, independent and other-pool scopes, current_session,
with_db_session, READ_ONLY and ISOLATION_LEVEL, and the session counts."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.orm import Session

from mingus_sessions import (
    ReadOnlyTransactionError,
    SessionError,
    current_session,
    get_engine,
    get_session,
    pool_context,
    session_scope,
    with_db_session,
)
from mingus_sessions._core.state import state
from tests.helpers import NoteRow
from tests.scopes.helpers import BACKEND, Boom, checked_out, db, insert, titles, with_pools

# -- engines and sessions ----------------------------------------------------------------


@db
def test_get_session_returns_new_session_bound_to_pool_engine() -> None:
    """get_session returns a new Session bound to the pool's engine that the caller closes."""
    first = get_session()
    second = get_session("other")
    try:
        assert isinstance(first, Session)
        assert first is not second
        assert first.get_bind() is get_engine()
        assert second.get_bind() is get_engine("other")
        assert first.execute(text("SELECT 1")).scalar() == 1
        assert checked_out() == 1
    finally:
        first.close()
        second.close()
    assert checked_out() == 0


@db
def test_get_engine_is_one_engine_per_pool() -> None:
    """get_engine returns the same engine for a pool every time and a different one per pool."""
    assert get_engine() is get_engine()
    assert get_engine("main") is get_engine()
    assert get_engine("other") is get_engine("other")
    assert get_engine("other") is not get_engine("main")


@db
def test_pool_context_yields_the_pools_engine() -> None:
    """pool_context("other") yields that pool's engine, usable as in the seeds."""
    with pool_context("other") as pool:
        assert pool is get_engine("other")
        with pool.connect() as conn:
            assert conn.execute(text("SELECT 1")).scalar() == 1
    assert checked_out("other") == 0


# -- session_scope -------------------------------------------------------------------------


@db
def test_scope_commits_on_success() -> None:
    """session_scope commits on success: the row is visible from a fresh scope."""
    with session_scope() as session:
        insert(session, "committed")
    assert titles() == ["committed"]


@db
def test_scope_rolls_back_and_reraises_unchanged() -> None:
    """session_scope rolls back on exception and re-raises a non-DB exception unchanged."""
    raised = Boom("the original")

    def write_then_fail() -> None:
        with session_scope() as session:
            insert(session, "rolled-back")
            raise raised

    with pytest.raises(Boom) as info:
        write_then_fail()
    assert info.value is raised
    assert titles() == []


@db
def test_scope_always_closes() -> None:
    """session_scope closes its session on success and on failure: nothing stays checked out."""
    with session_scope() as session:
        session.execute(text("SELECT 1"))
        assert checked_out() == 1
    assert checked_out() == 0

    def query_then_fail() -> None:
        with session_scope() as session:
            session.execute(text("SELECT 1"))
            raise Boom

    with pytest.raises(Boom):
        query_then_fail()
    assert checked_out() == 0


@db
def test_scope_does_not_expire_on_commit() -> None:
    """Objects stay readable after their scope committed (expire_on_commit=False)."""
    with session_scope() as session:
        note = NoteRow(title="kept", body="body text")
        session.add(note)
    assert note.title == "kept"
    assert note.body == "body text"
    assert isinstance(note.id, int)


# -- independent and other-pool scopes --------------------------------------------------------


@db
def test_independent_scope_commit_survives_outer_rollback() -> None:
    """independent=True opens another session whose commit survives the outer rollback."""

    def outer_fails() -> None:
        with session_scope() as outer:
            with session_scope(independent=True) as independent:
                assert independent is not outer
                assert current_session() is independent
                insert(independent, "independent")
            assert current_session() is outer
            insert(outer, "outer")
            raise Boom

    with pytest.raises(Boom):
        outer_fails()
    assert titles() == ["independent"]
    assert state.sessions.savepoints == 0
    assert checked_out() == 0


@db
def test_scope_on_other_pool_is_separate_session() -> None:
    """A scope of pool "other" inside a "main" scope is a separate session on its own engine."""
    with session_scope() as main:
        with session_scope("other") as other:
            assert other is not main
            assert other.get_bind() is get_engine("other")
            assert current_session() is other
            assert current_session("other") is other
            assert current_session("main") is main
            insert(other, "in-other")
        assert current_session() is main
        insert(main, "in-main")
    assert state.sessions.savepoints == 0
    assert titles() == ["in-main"]
    assert titles("other") == ["in-other"]


# -- current_session ---------------------------------------------------------------------------


@db
def test_current_session_inside_scope_and_by_pool() -> None:
    """current_session returns the innermost scope's session, or the named pool's."""
    with session_scope() as main:
        assert current_session() is main
        assert current_session("main") is main
        with pytest.raises(SessionError):
            current_session("other")
        with session_scope("other") as other:
            assert current_session("other") is other
            assert current_session("main") is main


@db
def test_current_session_outside_scope_says_how_to_fix() -> None:
    """current_session outside any scope raises SessionError whose message says what to do."""
    with pytest.raises(SessionError, match="session_scope") as info:
        current_session()
    assert "No active session" in str(info.value)
    with pytest.raises(SessionError, match='pool "other"'):
        current_session("other")


@db
def test_current_session_is_per_thread() -> None:
    """A new thread started inside a scope sees no active session."""
    seen: list[BaseException] = []

    def look() -> None:
        try:
            current_session()
        except BaseException as exc:
            seen.append(exc)

    with session_scope():
        thread = threading.Thread(target=look)
        thread.start()
        thread.join(10)
    assert len(seen) == 1
    assert isinstance(seen[0], SessionError)


@db
def test_current_session_is_per_asyncio_task() -> None:
    """Two concurrent asyncio tasks, each in its own scope, each see their own session."""

    async def task(name: str, both_inside: asyncio.Barrier) -> tuple[Session, Session, str]:
        with session_scope() as session:
            await both_inside.wait()  # the other task's scope is open now too
            await asyncio.sleep(0)
            seen = current_session()
            found = session.execute(text("SELECT :n"), {"n": name}).scalar_one()
        return session, seen, found

    async def main() -> list[tuple[Session, Session, str]]:
        barrier = asyncio.Barrier(2)
        return list(await asyncio.gather(task("a", barrier), task("b", barrier)))

    (s1, seen1, n1), (s2, seen2, n2) = asyncio.run(main())
    assert s1 is not s2
    assert seen1 is s1
    assert seen2 is s2
    assert (n1, n2) == ("a", "b")
    assert state.sessions.total_sessions == 2
    assert checked_out() == 0


@db
def test_scope_after_independent_scope_returns_to_right_session() -> None:
    """Nesting inside and after an independent scope always finds the innermost session."""
    with session_scope() as outer:
        with session_scope(independent=True) as independent:
            with session_scope() as nested_in_independent:
                assert nested_in_independent is independent
                assert current_session() is independent
            assert current_session() is independent
        assert current_session() is outer
        with session_scope() as nested_after:
            assert nested_after is outer
            insert(nested_after, "nested-after")
        assert current_session() is outer
    with pytest.raises(SessionError):
        current_session()
    assert titles() == ["nested-after"]


# -- with_db_session -----------------------------------------------------------------------------


@db
def test_with_db_session_bare_and_with_pool() -> None:
    """with_db_session, bare or given a pool, passes that pool's session= and commits."""

    @with_db_session
    def bare(title: str, *, session: Session) -> Session:
        insert(session, title)
        return session

    @with_db_session("other")
    def on_other(title: str, *, session: Session) -> Session:
        insert(session, title)
        return session

    @with_db_session()
    def called_empty(*, session: Session) -> Session:
        return session

    assert bare("bare").get_bind() is get_engine()
    assert on_other("on-other").get_bind() is get_engine("other")
    assert called_empty().get_bind() is get_engine()
    assert bare.__name__ == "bare"
    assert titles() == ["bare"]
    assert titles("other") == ["on-other"]
    assert state.sessions.committed_transactions >= 3


# -- READ_ONLY and ISOLATION_LEVEL ---------------------------------------------------------------


@db
def test_read_only_pool_refuses_writes(settings: Any) -> None:
    """A READ_ONLY pool can read but a write fails in the database and nothing is written."""
    with_pools(settings, ro={"DATABASE": "default", "READ_ONLY": True})
    assert titles("ro") == []
    with pytest.raises(ReadOnlyTransactionError) as info, session_scope("ro") as session:
        insert(session, "forbidden")
    cause = info.value.__cause__
    assert isinstance(cause, sa_exc.DBAPIError)
    if BACKEND == "postgresql":
        assert isinstance(cause, sa_exc.InternalError)
        assert getattr(cause.orig, "sqlstate", None) == "25006"
    elif BACKEND == "mysql":
        assert isinstance(cause, sa_exc.OperationalError)
        assert cause.orig.args[0] == 1792  # a write in a READ ONLY transaction
    else:
        assert isinstance(cause, sa_exc.OperationalError)
        assert "readonly" in str(cause.orig).lower()
    assert not info.value.transient
    assert titles() == []
    assert checked_out("ro") == 0


@db
@pytest.mark.postgresql
def test_read_only_pool_postgresql_transaction_is_read_only(settings: Any) -> None:
    """On PostgreSQL a READ_ONLY pool's transactions report transaction_read_only = on."""
    with_pools(settings, ro={"DATABASE": "default", "READ_ONLY": True})
    with session_scope("ro") as session:
        assert session.execute(text("SHOW transaction_read_only")).scalar() == "on"
    with session_scope() as session:
        assert session.execute(text("SHOW transaction_read_only")).scalar() == "off"


@db
@pytest.mark.parametrize("level", ["SERIALIZABLE", "READ UNCOMMITTED"])
def test_isolation_level_setting(settings: Any, level: str) -> None:
    """ISOLATION_LEVEL is the isolation level of every connection of the pool."""
    with_pools(settings, iso={"DATABASE": "default", "ISOLATION_LEVEL": level})
    with session_scope("iso") as session:
        conn = session.connection()
        assert conn.get_isolation_level() == level
        if BACKEND == "postgresql":
            shown = session.execute(text("SHOW transaction_isolation")).scalar()
            assert shown == level.lower()
        insert(session, "isolated")
    assert titles() == ["isolated"]
    with session_scope() as session:
        default_level = session.connection().get_isolation_level()
    server_default = {"postgresql": "READ COMMITTED", "mysql": "REPEATABLE READ"}
    assert default_level == server_default.get(BACKEND, "SERIALIZABLE")


# -- stats -----------------------------------------------------------------------------------------


@db
def test_session_stats_shape_and_counts() -> None:
    """Scopes keep total, active, committed, rolled back, failed and savepoint counts exactly."""
    assert state.sessions.snapshot() == {
        "total_sessions": 0,
        "active_sessions": 0,
        "committed_transactions": 0,
        "transaction_rollbacks": 0,
        "failed_sessions": 0,
        "savepoints": 0,
        "retries": 0,
    }
    with session_scope() as session:
        assert state.sessions.active_sessions == 1
        insert(session, "one")
    assert state.sessions.active_sessions == 0

    def failing_scope() -> None:
        with session_scope():
            assert state.sessions.active_sessions == 1  # a savepoint is not a session
            raise Boom

    with pytest.raises(Boom):
        failing_scope()
    with session_scope(), pytest.raises(Boom):
        failing_scope()
    assert state.sessions.snapshot() == {
        "total_sessions": 3,
        "active_sessions": 0,
        "committed_transactions": 2,
        "transaction_rollbacks": 2,  # the failed scope and the failed savepoint
        "failed_sessions": 2,
        "savepoints": 1,
        "retries": 0,
    }


@db
def test_session_stats_exact_under_threads() -> None:
    """Scopes opened by 8 threads at once are all counted and active_sessions returns to 0."""
    start = threading.Barrier(8)

    def worker() -> None:
        start.wait(10)
        for _ in range(500):
            with session_scope():  # no statement: no connection is checked out
                pass

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert state.sessions.total_sessions == 4000
    assert state.sessions.committed_transactions == 4000
    assert state.sessions.active_sessions == 0
