"""The queue pool of async engines: first come, first served among coroutines, and nothing lost.

Stand-in DB-API connections show the line's order and what a cancelled
waiter does with a connection it was handed, step by step on one loop; real
async engines (aiosqlite always, psycopg and aiomysql in their backend's run)
show the pool under contention, its timeouts and refusals, and, on
PostgreSQL, a terminated backend found at checkout without a ping.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import event, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool, QueuePool
from sqlalchemy.util.concurrency import greenlet_spawn

from mingus_sessions._core.async_handoff import AsyncHandOffQueue
from mingus_sessions._core.handoff import TryAgain
from mingus_sessions._core.liveness import liveness_check
from mingus_sessions._core.pools import (
    CheckoutChecks,
    QueueFullError,
    WaitAwareAsyncQueuePool,
)
from tests.core.test_pool_handoff import SETTLE, Creator

PG_URL = "postgresql+psycopg_async://{user}{password}@{host}:{port}/postgres".format(
    user=os.environ.get("PGUSER", "postgres"),
    password=f":{os.environ['PGPASSWORD']}" if os.environ.get("PGPASSWORD") else "",
    host=os.environ.get("PGHOST", "127.0.0.1"),
    port=os.environ.get("PGPORT", "5432"),
)
MYSQL_URL = "mysql+aiomysql://{user}{password}@{host}:{port}/mysql".format(
    user=os.environ.get("MYSQL_USER", "root"),
    password=f":{os.environ['MYSQL_PASSWORD']}" if os.environ.get("MYSQL_PASSWORD") else "",
    host=os.environ.get("MYSQL_HOST", "127.0.0.1"),
    port=os.environ.get("MYSQL_PORT", "3306"),
)

BACKENDS = [
    pytest.param("sqlite+aiosqlite:///:memory:", id="aiosqlite"),
    pytest.param(PG_URL, id="psycopg", marks=pytest.mark.postgresql),
    pytest.param(MYSQL_URL, id="aiomysql", marks=pytest.mark.mysql),
]


async def until(predicate: Callable[[], bool], what: str) -> None:
    """Let the loop run until ``predicate()`` holds (a task has reached its place in line)."""
    deadline = time.monotonic() + SETTLE
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        await asyncio.sleep(0.001)


# -- stand-in connections: the line's order, step by step ------------------------------------


def standin_pool(cls: type[QueuePool] = WaitAwareAsyncQueuePool, **kw: Any) -> QueuePool:
    kw.setdefault("pool_size", 1)
    kw.setdefault("max_overflow", 0)
    kw.setdefault("timeout", 10)
    return cls(Creator(), **kw)


async def checkout(pool: QueuePool) -> Any:
    return await greenlet_spawn(pool.connect)


def line_of(pool: QueuePool) -> int:
    return pool._pool.waiting()  # type: ignore[attr-defined, no-any-return]


async def queue_up(pool: QueuePool, names: str, got: list[str]) -> list[asyncio.Task[None]]:
    """One task per name, each in line after the previous one; each returns at once."""

    async def run(name: str) -> None:
        connection = await checkout(pool)
        got.append(name)
        connection.close()

    tasks = []
    for count, name in enumerate(names, start=1):
        tasks.append(asyncio.create_task(run(name)))
        await until(lambda count=count: line_of(pool) == count, f"{name} in line")  # type: ignore[misc]
    return tasks


@pytest.mark.asyncio
async def test_a_returned_connection_goes_to_the_longest_waiter() -> None:
    """The returner asks again at once, with no await in between: it queues behind the line."""
    pool = standin_pool()
    holder = await checkout(pool)
    got: list[str] = []
    tasks = await queue_up(pool, "abc", got)
    holder.close()
    again = asyncio.create_task(checkout(pool))
    await asyncio.gather(*tasks)
    (await again).close()
    assert got == ["a", "b", "c"]
    assert pool.checkedout() == 0
    pool.dispose()


@pytest.mark.asyncio
async def test_sqlalchemys_async_pool_lets_the_returner_barge() -> None:
    """The anchor: with AsyncAdaptedQueuePool, a coroutine that returns and asks again takes
    the connection back while the waiter it woke has not run yet."""
    pool = standin_pool(AsyncAdaptedQueuePool)
    holder = await checkout(pool)
    got: list[str] = []
    waiter = asyncio.create_task(checkout(pool))
    await until(lambda: pool._pool._queue._getters, "a waiter")  # type: ignore[attr-defined]

    def return_and_take_back() -> Any:
        holder.close()
        return pool.connect()

    barged = await greenlet_spawn(return_and_take_back)
    got.append("returner")
    barged.close()
    (await waiter).close()
    got.append("waiter")
    assert got == ["returner", "waiter"]
    pool.dispose()


@pytest.mark.asyncio
async def test_a_waiter_that_times_out_raises_sqlalchemys_timeout_and_leaves_the_line() -> None:
    pool = standin_pool(timeout=0.05)
    holder = await checkout(pool)
    with pytest.raises(sa_exc.TimeoutError) as caught:
        await checkout(pool)
    assert not isinstance(caught.value, QueueFullError)
    assert "QueuePool limit of size 1 overflow 0 reached" in str(caught.value)
    assert pool.probe.timeouts == 1  # type: ignore[attr-defined]
    assert (line_of(pool), pool.probe.waiting) == (0, 0)  # type: ignore[attr-defined]
    holder.close()
    assert pool.checkedin() == 1
    pool.dispose()


@pytest.mark.asyncio
async def test_max_waiting_refuses_at_once() -> None:
    pool = standin_pool(max_waiting=1, timeout=30)
    holder = await checkout(pool)
    got: list[str] = []
    (waiter,) = await queue_up(pool, "a", got)
    started = time.monotonic()
    with pytest.raises(QueueFullError, match="1 caller already wait"):
        await checkout(pool)
    assert time.monotonic() - started < 1.0
    assert pool.probe.timeouts == 1  # type: ignore[attr-defined]  # counted as the sync pool does
    holder.close()
    await waiter
    assert got == ["a"]
    pool.dispose()


@pytest.mark.asyncio
async def test_a_cancelled_waiter_leaves_the_line() -> None:
    pool = standin_pool()
    holder = await checkout(pool)
    got: list[str] = []
    first, second = await queue_up(pool, "ab", got)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert line_of(pool) == 1
    holder.close()
    await second
    assert got == ["b"]
    assert (pool.checkedout(), pool.checkedin()) == (0, 1)
    pool.dispose()


@pytest.mark.asyncio
@pytest.mark.parametrize("behind", ["", "b"], ids=["alone", "with-one-behind"])
async def test_a_waiter_cancelled_after_the_hand_off_passes_the_connection_on(behind: str) -> None:
    """The connection is handed over, then the task is cancelled before it runs: the
    connection goes to the next in line, or back to the idle ones; none is opened or lost."""
    pool = standin_pool()
    holder = await checkout(pool)
    got: list[str] = []
    tasks = await queue_up(pool, "a" + behind, got)
    holder.close()  # handed to "a" ...
    tasks[0].cancel()  # ... which is cancelled before it gets to run
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[0], asyncio.CancelledError)
    assert got == list(behind)
    assert (pool.checkedout(), pool.checkedin(), pool.overflow()) == (0, 1, 0)
    assert pool._creator.made == 1  # type: ignore[attr-defined]
    pool.dispose()


@pytest.mark.asyncio
async def test_a_wake_with_room_passes_on_past_a_cancelled_waiter() -> None:
    """wake_one() tells the head of the line to open a connection; if it is cancelled
    before it runs, the next in line is told instead."""
    queue: AsyncHandOffQueue[str] = AsyncHandOffQueue(maxsize=1)
    outcomes: list[str] = []

    async def wait(name: str) -> None:
        try:
            await greenlet_spawn(queue.get, True, 10)
        except TryAgain:
            outcomes.append(f"{name}: try again")

    first = asyncio.create_task(wait("a"))
    await until(lambda: queue.waiting() == 1, "a in line")
    second = asyncio.create_task(wait("b"))
    await until(lambda: queue.waiting() == 2, "b in line")
    queue.wake_one()
    first.cancel()
    await asyncio.gather(first, second, return_exceptions=True)
    assert outcomes == ["b: try again"]
    assert (queue.waiting(), queue.qsize()) == (0, 0)


@pytest.mark.asyncio
async def test_waiting_outside_a_greenlet_fails_and_leaves_the_line_empty() -> None:
    queue: AsyncHandOffQueue[str] = AsyncHandOffQueue(maxsize=1)
    with pytest.raises(sa_exc.MissingGreenlet):
        queue.get(True, 1)
    assert queue.waiting() == 0


# -- real async engines ------------------------------------------------------------------------

EngineFactory = Callable[..., AsyncEngine]


@pytest_asyncio.fixture
async def engine_of() -> AsyncIterator[EngineFactory]:
    """Async engines on the queue pool, each disposed after the test."""
    made: list[AsyncEngine] = []

    def make(url: str, **kw: Any) -> AsyncEngine:
        kw.setdefault("poolclass", WaitAwareAsyncQueuePool)
        kw.setdefault("max_overflow", 0)
        engine = create_async_engine(url, **kw)
        made.append(engine)
        return engine

    yield make
    for engine in made:
        await engine.dispose()


async def hold(engine: AsyncEngine, seconds: float) -> float:
    """Check out, run a statement, keep the connection ``seconds``: how long the checkout took.

    Closed explicitly: ``async with`` closes through ``asyncio.shield``, a task
    of its own, which lets the loop run the woken waiter before the returner
    can ask again, and so hides the barging that the fairness tests look for.
    """
    asked = time.perf_counter()
    connection = await engine.connect()
    try:
        waited = time.perf_counter() - asked
        await connection.execute(text("SELECT 1"))
        await asyncio.sleep(seconds)
    finally:
        await connection.close()
    return waited


async def turns_in_a_loop(engine: AsyncEngine, tasks: int, rounds: int) -> float:
    """Jain's fairness index of the checkouts each of ``tasks`` looping tasks got (1: equal)."""
    counts = [0] * tasks
    budget = tasks * rounds

    async def loop(index: int) -> None:
        nonlocal budget
        while budget > 0:
            budget -= 1
            await hold(engine, 0.002)
            counts[index] += 1

    await asyncio.gather(*(loop(index) for index in range(tasks)))
    return sum(counts) ** 2 / (tasks * sum(count * count for count in counts))


def pool_of(engine: AsyncEngine) -> WaitAwareAsyncQueuePool:
    pool = engine.sync_engine.pool
    assert isinstance(pool, WaitAwareAsyncQueuePool)
    return pool


@pytest.mark.asyncio
@pytest.mark.parametrize("url", BACKENDS)
async def test_contention_is_served_in_turn(engine_of: EngineFactory, url: str) -> None:
    """30 tasks, 3 connections, 50 ms each: nobody times out, and nobody waits much longer
    than the 10 turns of the line ahead of it."""
    engine = engine_of(url, pool_size=3, pool_timeout=10)
    tasks, size, seconds = 30, 3, 0.05
    waits = await asyncio.gather(*(hold(engine, seconds) for _ in range(tasks)))
    assert max(waits) <= 1.5 * tasks / size * seconds
    pool = pool_of(engine)
    assert pool.probe.timeouts == 0
    assert (pool.checkedout(), pool.checkedin()) == (0, size)


@pytest.mark.asyncio
@pytest.mark.parametrize("url", BACKENDS)
async def test_each_task_gets_its_share(engine_of: EngineFactory, url: str) -> None:
    """24 tasks check out in a loop, asking again as soon as they return: with hand-off,
    each gets the same number of turns (Jain's fairness index of the counts near 1)."""
    engine = engine_of(url, pool_size=3, pool_timeout=10)
    assert await turns_in_a_loop(engine, tasks=24, rounds=15) >= 0.99


@pytest.mark.asyncio
async def test_sqlalchemys_async_pool_fails_the_share_test(engine_of: EngineFactory) -> None:
    """The anchor: with AsyncAdaptedQueuePool, the tasks holding the connections at the start
    keep them, taking each back as they return it, and the others wait."""
    engine = engine_of(
        "sqlite+aiosqlite:///:memory:",
        poolclass=AsyncAdaptedQueuePool,
        pool_size=3,
        pool_timeout=10,
    )
    assert await turns_in_a_loop(engine, tasks=24, rounds=15) < 0.5


@pytest.mark.asyncio
async def test_a_timeout_on_a_real_engine(engine_of: EngineFactory) -> None:
    engine = engine_of("sqlite+aiosqlite:///:memory:", pool_size=1, pool_timeout=0.05)
    async with engine.connect():
        with pytest.raises(sa_exc.TimeoutError, match=r"connection timed out, timeout 0\.05"):
            async with engine.connect():
                pass
    assert pool_of(engine).probe.timeouts == 1


@pytest.mark.asyncio
async def test_max_waiting_on_a_real_engine(engine_of: EngineFactory) -> None:
    engine = engine_of("sqlite+aiosqlite:///:memory:", pool_size=1, max_waiting=2, pool_timeout=10)
    pool = pool_of(engine)
    release = asyncio.Event()

    async def hold_until_released() -> None:
        async with engine.connect():
            await release.wait()

    holder = asyncio.create_task(hold_until_released())
    await until(lambda: pool.checkedout() == 1, "the holder")
    waiters = [asyncio.create_task(hold(engine, 0)) for _ in range(2)]
    await until(lambda: pool.probe.waiting == 2, "two in line")
    with pytest.raises(QueueFullError):
        await hold(engine, 0)
    release.set()
    await asyncio.gather(holder, *waiters)
    assert pool.probe.timeouts == 1  # the refusal, counted as the sync pool does


@pytest.mark.asyncio
@pytest.mark.parametrize("url", BACKENDS)
async def test_cancelled_waiters_lose_no_connection(engine_of: EngineFactory, url: str) -> None:
    """Waiters cancelled just after a connection was handed to them, and one cancelled in
    line: every connection comes back, and the pool opens none beyond its two."""
    engine = engine_of(url, pool_size=2, pool_timeout=10)
    pool = pool_of(engine)
    opened: list[object] = []
    event.listen(pool, "connect", lambda dbapi_connection, record: opened.append(record))
    release = asyncio.Event()

    async def hold_until_released() -> None:
        # No statement while holding: a task cancelled mid-statement has its connection
        # closed by SQLAlchemy (and replaced), which is not what this test looks at.
        connection = await engine.connect()
        await release.wait()
        await connection.close()

    holders = [await engine.connect() for _ in range(2)]
    waiters = []
    for count in range(1, 7):
        waiters.append(asyncio.create_task(hold_until_released()))
        await until(lambda count=count: pool._pool.waiting() == count, "waiter in line")  # type: ignore[misc]
    waiters[4].cancel()
    await asyncio.wait([waiters[4]])
    assert pool._pool.waiting() == 5
    for holder, handed in zip(holders, (waiters[0], waiters[2]), strict=True):
        # The return hands the connection to the head of the line, and nothing has run
        # that waiter since: cancelled now, it must pass the connection on to the next.
        await holder.close()
        assert not handed.done()
        handed.cancel()
        await asyncio.wait([handed])
    assert (pool.checkedout(), pool._pool.waiting()) == (2, 1)
    release.set()
    results = await asyncio.gather(*waiters, return_exceptions=True)
    cancelled = [isinstance(result, asyncio.CancelledError) for result in results]
    assert cancelled == [True, False, True, False, True, False]
    assert (pool.checkedout(), pool.checkedin(), pool.overflow()) == (0, 2, 0)
    assert (pool.probe.waiting, pool._pool.waiting(), len(opened)) == (0, 0, 2)


@pytest.mark.asyncio
async def test_recreate_keeps_the_class_and_settings(engine_of: EngineFactory) -> None:
    checks = CheckoutChecks(pre_ping=True)
    engine = engine_of(
        "sqlite+aiosqlite:///:memory:", pool_size=2, max_waiting=4, checkout_checks=checks
    )
    old = pool_of(engine)
    await hold(engine, 0)
    await engine.dispose()
    new = pool_of(engine)
    assert new is not old
    assert (new.size(), new.max_waiting, new.checkout_checks, new.probe) == (
        2,
        4,
        checks,
        old.probe,
    )
    assert new._is_asyncio
    await hold(engine, 0)
    assert new.checkedin() == 1


@pytest.mark.asyncio
async def test_a_waiter_of_a_disposed_pool_gets_a_connection(engine_of: EngineFactory) -> None:
    """dispose() replaces the pool while a task waits in the old one's line: the connection
    returned there is closed, and the waiter is told to open one of its own."""
    engine = engine_of("sqlite+aiosqlite:///:memory:", pool_size=1, pool_timeout=10)
    old = pool_of(engine)
    closed: list[object] = []
    event.listen(old, "close", lambda dbapi_connection, record: closed.append(dbapi_connection))
    holder = await engine.connect()
    waiter = asyncio.create_task(hold(engine, 0))
    await until(lambda: old.probe.waiting == 1, "a waiter")
    await engine.dispose()
    await holder.close()
    await waiter
    # Both connections, the holder's and the one the waiter opened, closed on return.
    assert len(closed) == 2
    assert closed[0] is not closed[1]
    assert old.checkedin() == 0
    assert pool_of(engine) is not old


# -- PostgreSQL: liveness at checkout ----------------------------------------------------------


class Counted:
    """Wraps a check or a ping, counting its calls."""

    def __init__(self, check: Callable[[Any], bool]) -> None:
        self.check = check
        self.calls = 0

    def __call__(self, connection: Any) -> bool:
        self.calls += 1
        return self.check(connection)


async def backend_pid(connection: AsyncConnection) -> int:
    return int((await connection.execute(text("SELECT pg_backend_pid()"))).scalar_one())


async def run_admin(statement: str, *args: Any) -> Any:
    import psycopg

    async with await psycopg.AsyncConnection.connect(
        PG_URL.replace("postgresql+psycopg_async", "postgresql"), autocommit=True
    ) as admin:
        return await (await admin.execute(statement, args)).fetchone()


@pytest.fixture
def pg_checked(
    engine_of: EngineFactory, monkeypatch: pytest.MonkeyPatch
) -> Callable[[], Awaitable[tuple[AsyncEngine, Counted, Counted]]]:
    async def make() -> tuple[AsyncEngine, Counted, Counted]:
        check = liveness_check("postgresql+psycopg_async", primary=True)
        assert check is not None
        alive = Counted(check)
        engine = engine_of(
            PG_URL,
            pool_size=1,
            checkout_checks=CheckoutChecks(pre_ping=True, alive=alive, ping_idle=60),
        )
        dialect = engine.sync_engine.dialect
        pings = Counted(dialect._do_ping_w_event)
        monkeypatch.setattr(dialect, "_do_ping_w_event", pings)
        return engine, alive, pings

    return make


@pytest.mark.postgresql
@pytest.mark.asyncio
async def test_a_healthy_connection_is_checked_without_a_ping(
    pg_checked: Callable[[], Awaitable[tuple[AsyncEngine, Counted, Counted]]],
) -> None:
    engine, alive, pings = await pg_checked()
    pids = set()
    for _ in range(5):
        async with engine.connect() as connection:
            pids.add(await backend_pid(connection))
    assert len(pids) == 1
    assert (alive.calls, pings.calls) == (4, 0)


@pytest.mark.postgresql
@pytest.mark.asyncio
async def test_a_terminated_backend_is_replaced_at_checkout_without_a_ping(
    pg_checked: Callable[[], Awaitable[tuple[AsyncEngine, Counted, Counted]]],
) -> None:
    engine, alive, pings = await pg_checked()
    async with engine.connect() as connection:
        victim = await backend_pid(connection)
    # The timeout makes the server wait until the backend is gone.
    assert await run_admin("SELECT pg_terminate_backend(%s, 5000)", victim) == (True,)
    async with engine.connect() as connection:
        replacement = await backend_pid(connection)
    assert replacement != victim
    assert (alive.calls, pings.calls) == (1, 0)
    assert pool_of(engine).checkedin() == 1
