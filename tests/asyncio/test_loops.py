"""Event loops: one engine per pool per loop, disposed of with its loop, never shared."""

from __future__ import annotations

import asyncio
import gc
import threading

import pytest
from asgiref.sync import async_to_sync
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from mingus_sessions import asession_scope, get_async_engine
from mingus_sessions._core.state import state
from tests.scopes.helpers import BACKEND, db


async def _one_scope(engines: list[AsyncEngine]) -> int:
    engines.append(get_async_engine())
    async with asession_scope() as session:
        return int((await session.execute(text("SELECT 1"))).scalar_one())


def _still_registered(engines: list[AsyncEngine]) -> int:
    """How many of ``engines`` the registry still holds (another test's loops aside)."""
    gc.collect()
    mine = {id(engine) for engine in engines}
    return sum(
        id(entry.engine) in mine
        for entries in list(state.async_pools.values())
        for entry in entries.values()
    )


@db
def test_twenty_asyncio_runs_in_a_row_each_get_an_engine_closed_with_the_loop() -> None:
    """No "attached to a different loop": each run has its engine, closed as its loop ends."""
    engines: list[AsyncEngine] = []
    for _ in range(20):
        assert asyncio.run(_one_scope(engines)) == 1
    assert len({id(engine) for engine in engines}) == 20
    for engine in engines:
        # Disposed from inside its loop by the loop's shutdown: nothing left open.
        assert engine.sync_engine.pool.checkedin() == 0  # type: ignore[attr-defined]
        assert engine.sync_engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    assert _still_registered(engines) == 0


@db
def test_async_to_sync_from_sync_code() -> None:
    engines: list[AsyncEngine] = []
    for _ in range(3):
        assert async_to_sync(_one_scope)(engines) == 1
    assert len(engines) == 3


@db
def test_two_threads_with_their_own_loops_at_once() -> None:
    engines: list[AsyncEngine] = []
    both = threading.Barrier(2)
    failures: list[BaseException] = []

    async def work() -> None:
        both.wait(5)  # the two loops are alive together
        for _ in range(5):
            await _one_scope(engines)

    def run() -> None:
        try:
            asyncio.run(work())
        except BaseException as exc:  # reported below, not lost in the thread
            failures.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert failures == []
    assert len({id(engine) for engine in engines}) == 2


@pytest.mark.asyncio
@db
async def test_a_loop_per_test_gets_a_fresh_engine_first() -> None:
    engine = get_async_engine()
    assert engine.sync_engine.pool.checkedin() == 0  # type: ignore[attr-defined]
    async with asession_scope() as session:
        await session.execute(text("SELECT 1"))


@pytest.mark.asyncio
@db
async def test_a_loop_per_test_gets_a_fresh_engine_second() -> None:
    """The first test's loop is closed: its engine is not this loop's."""
    await test_a_loop_per_test_gets_a_fresh_engine_first()


@pytest.mark.asyncio
@db
async def test_outside_a_running_loop_is_a_clear_error() -> None:
    def sync_caller() -> None:
        get_async_engine()

    with pytest.raises(RuntimeError, match="no running event loop"):
        await asyncio.to_thread(sync_caller)


@db
def test_a_settings_change_replaces_the_loops_engine(settings: object) -> None:
    async def main() -> None:
        first = get_async_engine()
        async with asession_scope() as session:
            await session.execute(text("SELECT 1"))
        state.settings_changed()
        second = get_async_engine()
        assert second is not first
        await asyncio.sleep(0)  # the old engine's disposal runs on this loop
        for task in list(state.async_tasks):
            await task
        assert first.sync_engine.pool.checkedin() == 0  # type: ignore[attr-defined]

    asyncio.run(main())


@db
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.skipif(
    BACKEND == "mysql",
    reason="aiomysql's transports on a closed loop are collected late, and warn in a later test",
)
def test_loops_closed_without_shutting_down_are_forgotten() -> None:
    """``loop.close()`` alone: the next engine built drops theirs (the driver's GC closes the
    connections, with its ResourceWarning), and none counts in the pool's metrics."""
    from mingus_sessions.metrics import get_pool_metrics

    engines: list[AsyncEngine] = []

    def run_and_close_only() -> None:
        loop = asyncio.new_event_loop()
        loop.run_until_complete(_one_scope(engines))
        loop.close()

    for _ in range(5):
        run_and_close_only()
    capacity = get_pool_metrics("main").capacity
    assert capacity == state.pools["main"].config.capacity  # the sync engine's only
    assert asyncio.run(_one_scope(engines)) == 1
    assert not any(loop.is_closed() for loop in list(state.async_pools))
    assert _still_registered(engines) == 0
    # Collected here, where their warnings are expected, not in a later test.
    engines.clear()
    gc.collect()
