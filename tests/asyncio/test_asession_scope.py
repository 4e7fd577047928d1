"""asession_scope and its companions: commit, rollback (CancelledError included), savepoints,
independent scopes, current_async_session, with_async_db_session, on_commit and the counters."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from mingus_sessions import (
    DeadlockError,
    SessionError,
    asession_scope,
    current_async_session,
    current_session,
    get_async_engine,
    get_async_session,
    on_commit,
    session_scope,
    with_async_db_session,
)
from mingus_sessions._core.state import state
from tests.asyncio.helpers import achecked_out, ainsert, atitles
from tests.scopes.helpers import Boom, db

pytestmark = [pytest.mark.asyncio, db]


async def test_a_scope_commits_on_success_and_returns_its_connection() -> None:
    """The scope's work is committed when its block ends, and its connection goes back."""
    async with asession_scope() as session:
        assert isinstance(session, AsyncSession)
        await ainsert(session, "kept")
        assert achecked_out() == 1
    assert achecked_out() == 0
    assert await atitles() == ["kept"]
    assert state.sessions.committed_transactions >= 1


async def test_an_exception_rolls_the_scope_back_and_goes_on() -> None:
    with pytest.raises(Boom):
        async with asession_scope() as session:
            await ainsert(session, "lost")
            raise Boom
    assert await atitles() == []
    assert achecked_out() == 0
    assert state.sessions.failed_sessions == 1


async def test_a_cancelled_task_rolls_back_and_returns_the_connection() -> None:
    """A CancelledError is an exception like any other: its scope's work rolls back."""
    inside = asyncio.Event()

    async def work() -> None:
        async with asession_scope() as session:
            await ainsert(session, "cancelled")
            inside.set()
            await asyncio.sleep(30)

    task = asyncio.create_task(work())
    await inside.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert achecked_out() == 0
    assert await atitles() == []


async def test_a_nested_scope_is_a_savepoint() -> None:
    async with asession_scope() as outer:
        await ainsert(outer, "outer")
        with pytest.raises(Boom):
            async with asession_scope() as inner:
                assert inner is outer
                await ainsert(inner, "inner")
                raise Boom
        async with asession_scope() as kept:
            await ainsert(kept, "second")
        assert achecked_out() == 1
    assert await atitles() == ["outer", "second"]
    assert state.sessions.savepoints == 2


async def test_an_independent_scope_commits_on_its_own() -> None:
    with pytest.raises(Boom):
        async with asession_scope() as outer:
            # (Written first: SQLite's shared in-memory test database locks tables.)
            async with asession_scope(independent=True) as own:
                assert own is not outer
                assert current_async_session() is own
                await ainsert(own, "own")
            assert current_async_session() is outer
            await ainsert(outer, "outer")
            raise Boom
    assert await atitles() == ["own"]


async def test_current_async_session_is_the_innermost_scope_of_its_pool() -> None:
    with pytest.raises(SessionError, match="No active async session"):
        current_async_session()
    async with asession_scope() as session:
        assert current_async_session() is session
        assert current_async_session("main") is session
        with pytest.raises(SessionError):
            current_async_session("other")
        async with asession_scope("other") as other:
            assert current_async_session() is other
            assert current_async_session("main") is session


async def test_sync_and_async_scopes_never_nest_in_each_other() -> None:
    """A sync scope inside an async one (sync code called from it) opens its own session."""
    async with asession_scope() as session:
        with pytest.raises(SessionError):
            current_session()

        def sync_part() -> str:
            with session_scope() as sync_session:
                assert sync_session is not session.sync_session
                return str(sync_session.execute(text("SELECT 'sync'")).scalar())

        assert await asyncio.to_thread(sync_part) == "sync"


async def test_with_async_db_session_passes_the_scopes_session() -> None:
    @with_async_db_session
    async def add(title: str, *, session: AsyncSession) -> str:
        await ainsert(session, title)
        return title

    @with_async_db_session("other")
    async def count(*, session: AsyncSession) -> int:
        return int((await session.execute(text("SELECT count(*) FROM testapp_note"))).scalar())

    assert await add("decorated") == "decorated"
    assert await atitles() == ["decorated"]
    assert await count() == 1 or await count() == 0  # "other" may be another database

    with pytest.raises(TypeError, match="coroutine functions"):
        with_async_db_session(lambda session: None)


async def test_get_async_session_is_the_callers_to_close() -> None:
    session = get_async_session()
    try:
        assert (await session.execute(text("SELECT 1"))).scalar() == 1
        assert achecked_out() == 1
    finally:
        await session.close()
    assert achecked_out() == 0


async def test_one_engine_per_pool_per_loop() -> None:
    engine = get_async_engine()
    assert isinstance(engine, AsyncEngine)
    assert get_async_engine() is engine
    assert get_async_engine("main") is engine
    assert get_async_engine("other") is not engine

    found: list[AsyncEngine] = []

    def in_another_loop() -> None:
        async def build() -> None:
            found.append(get_async_engine())
            async with asession_scope() as session:
                await session.execute(text("SELECT 1"))

        asyncio.run(build())

    await asyncio.to_thread(in_another_loop)
    assert found[0] is not engine


async def test_on_commit_waits_for_the_async_commit() -> None:
    ran: list[str] = []
    async with asession_scope() as session:
        await ainsert(session, "x")
        on_commit(lambda: ran.append("committed"))
        assert ran == []
    assert ran == ["committed"]
    with pytest.raises(Boom):
        async with asession_scope() as session:
            on_commit(lambda: ran.append("never"))
            raise Boom
    assert ran == ["committed"]


async def test_errors_are_translated_as_in_sync_scopes() -> None:
    """A unique violation is not transient; a deadlock-class error keeps its class."""
    async with asession_scope() as session:
        await ainsert(session, "dup")
    with pytest.raises(Exception) as raised:
        async with asession_scope() as session:
            await ainsert(session, "dup")
    assert not isinstance(raised.value, DeadlockError)
    assert achecked_out() == 0
