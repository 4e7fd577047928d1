"""Cancellation and concurrent use at a scope's end: a nested scope's end is waited for by its
cancelled caller, and an end waits for another task still inside the session."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import event, text
from sqlalchemy.util import await_

from mingus_sessions import ConcurrentSessionUseError, asession_scope, get_async_engine
from tests.asyncio.helpers import achecked_out, ainsert, atitles
from tests.scopes.helpers import BACKEND, db

pytestmark = [pytest.mark.asyncio, db]

SLEEP = {"postgresql": "SELECT pg_sleep(0.3)", "mysql": "SELECT SLEEP(0.3)"}


def _slow_savepoint_ends(delay: float) -> None:
    """Make RELEASE and ROLLBACK TO SAVEPOINT take ``delay`` seconds on this loop's engine."""
    engine = get_async_engine().sync_engine

    @event.listens_for(engine, "before_cursor_execute")
    def slow(*args: object) -> None:
        statement = str(args[2])
        if statement.startswith(("RELEASE SAVEPOINT", "ROLLBACK TO SAVEPOINT")):
            await_(asyncio.sleep(delay))


async def test_a_caller_cancelled_while_its_nested_scope_ends_waits_for_that_end() -> None:
    """The outer scope's end then finds the session free: nothing is left in a transaction."""
    _slow_savepoint_ends(0.3)
    ending = asyncio.Event()

    async def work() -> None:
        async with asession_scope() as outer:
            await ainsert(outer, "outer")
            async with asession_scope() as inner:
                await ainsert(inner, "inner")
                ending.set()

    task = asyncio.create_task(work())
    await ending.wait()
    await asyncio.sleep(0.05)  # inside the inner scope's RELEASE now
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert achecked_out() == 0
    assert await atitles() == []


async def test_a_timeout_around_a_nested_scope_leaves_the_outer_one_usable() -> None:
    _slow_savepoint_ends(0.3)
    async with asession_scope() as outer:
        await ainsert(outer, "outer")
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1), asession_scope() as inner:
                await ainsert(inner, "inner")
        assert (await outer.execute(text("SELECT 1"))).scalar_one() == 1
    # The inner scope's end ran to its end: its work was released into the outer.
    assert await atitles() == ["inner", "outer"]
    assert achecked_out() == 0


@pytest.mark.skipif(BACKEND not in SLEEP, reason="needs a server-side sleep")
async def test_a_scope_ends_only_once_another_task_has_left_its_session() -> None:
    """The end waits for the other task's statement; that task's next call is refused."""
    started = asyncio.Event()

    async def other(session: object) -> None:
        started.set()
        await session.execute(text(SLEEP[BACKEND]))  # type: ignore[attr-defined]
        await ainsert(session, "from-the-other-task")  # type: ignore[arg-type]

    async with asession_scope() as session:
        await ainsert(session, "mine")
        task = asyncio.create_task(other(session))
        await started.wait()
        await asyncio.sleep(0.05)
    with pytest.raises(ConcurrentSessionUseError):
        await task
    assert await atitles() == ["mine"]
    assert achecked_out() == 0


async def test_an_abandoned_generator_inside_a_scope_rolls_back_without_an_error() -> None:
    """Its scope is ended by the loop's finalizer, in another context."""
    failures: list[object] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda loop, context: failures.append(context))

    async def rows() -> AsyncIterator[int]:
        async with asession_scope() as session:
            await ainsert(session, "abandoned")
            yield 1
            yield 2

    stream = rows()
    assert await stream.__anext__() == 1
    del stream
    for _ in range(20):  # the finalizer runs aclose() as a task of the loop
        await asyncio.sleep(0.01)
        if achecked_out() == 0:
            break
    assert achecked_out() == 0
    # The abandoned scope's frame is still the head of this task's context (the
    # loop ended it in another task): later scopes skip it.
    assert await atitles() == []
    assert achecked_out() == 0
    assert failures == [], failures
