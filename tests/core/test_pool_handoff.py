"""The queue pool's line: first come, first served, bounded, and woken when room appears.

Plain SQLAlchemy with stand-in DB-API connections: the order in which
callers get connections is the pool's alone, whatever the database.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy.pool import QueuePool

from mingus_sessions._core.pools import QueueFullError, WaitAwareQueuePool

#: Long enough for a thread to reach its wait on a loaded 2-core machine.
SETTLE = 5.0


class FakeConnection:
    """What a pool needs of a DB-API connection."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.closed = False

    def rollback(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


class Creator:
    def __init__(self) -> None:
        self.made = 0

    def __call__(self) -> FakeConnection:
        self.made += 1
        return FakeConnection(self.made)


def queue_pool(cls: type[QueuePool] = WaitAwareQueuePool, **kw: Any) -> QueuePool:
    kw.setdefault("pool_size", 1)
    kw.setdefault("max_overflow", 0)
    kw.setdefault("timeout", 10)
    return cls(Creator(), **kw)


def wait_until(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + SETTLE
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.002)


@pytest.fixture
def started() -> Iterator[list[threading.Thread]]:
    threads: list[threading.Thread] = []
    yield threads
    for thread in threads:
        thread.join(timeout=15)
        assert not thread.is_alive(), "a checkout never ended"


def checkout_in_thread(
    pool: QueuePool, name: str, got: list[str], threads: list[threading.Thread], hold: float = 0.0
) -> None:
    def run() -> None:
        connection = pool.connect()
        got.append(name)
        time.sleep(hold)
        connection.close()

    thread = threading.Thread(target=run, name=name, daemon=True)
    threads.append(thread)
    thread.start()


def test_connections_go_to_callers_in_the_order_they_came(
    started: list[threading.Thread],
) -> None:
    """Five callers queue one after another on a pool of one: they are served in that order."""
    pool = queue_pool()
    held = pool.connect()
    got: list[str] = []
    for number in range(5):
        checkout_in_thread(pool, f"caller-{number}", got, started)
        wait_until(lambda n=number: pool.probe.waiting == n + 1, f"caller {number} to queue")
    held.close()
    for thread in started:
        thread.join(timeout=15)
    assert got == [f"caller-{number}" for number in range(5)]
    assert pool.probe.queued == 5
    assert pool.probe.waiting == 0


def returning_thread_checks_out_again(pool: QueuePool, started: list[threading.Thread]) -> str:
    """Who gets the connection when its holder returns it and asks again at once."""
    held = pool.connect()
    got: list[str] = []
    checkout_in_thread(pool, "waiter", got, started, hold=0.05)
    wait_until(lambda: pool.checkedout() == 1 and _someone_waits(pool), "the waiter to queue")
    held.close()
    again = pool.connect()
    got.append("returner")
    again.close()
    return got[0]


def _someone_waits(pool: QueuePool) -> bool:
    probe = getattr(pool, "probe", None)
    if probe is not None:
        return bool(probe.waiting)
    # SQLAlchemy's own queue: its condition has a waiter once the thread blocks.
    return bool(pool._pool.not_empty._waiters)  # type: ignore[attr-defined]


def test_a_returned_connection_goes_to_the_waiter_not_back_to_its_holder(
    started: list[threading.Thread],
) -> None:
    """The holder that returns and asks again queues behind the caller already waiting."""
    assert returning_thread_checks_out_again(queue_pool(), started) == "waiter"


def test_sqlalchemys_queue_pool_lets_the_holder_take_it_back(
    started: list[threading.Thread],
) -> None:
    """The behaviour the hand-off replaces: QueuePool's returner barges ahead of its waiter."""
    assert returning_thread_checks_out_again(queue_pool(QueuePool), started) == "returner"


def test_a_caller_that_waits_too_long_times_out_and_leaves_the_line() -> None:
    """POOL_TIMEOUT still bounds a wait; the timeout is counted and the line is empty after."""
    pool = queue_pool(timeout=0.2)
    held = pool.connect()
    began = time.monotonic()
    with pytest.raises(sa_exc.TimeoutError, match=r"connection timed out, timeout 0\.20"):
        pool.connect()
    assert 0.15 <= time.monotonic() - began < 2.0
    assert pool.probe.timeouts == 1
    assert pool.probe.waiting == 0
    assert pool._pool.waiting() == 0
    held.close()
    pool.connect().close()  # the returned connection was kept idle, not handed to a ghost
    assert pool.checkedin() == 1


def test_past_max_waiting_a_checkout_is_refused_at_once(started: list[threading.Thread]) -> None:
    """MAX_WAITING callers in line: the next one fails without waiting, saying the line is full."""
    pool = queue_pool(max_waiting=2, timeout=10)
    held = pool.connect()
    got: list[str] = []
    for number in range(2):
        checkout_in_thread(pool, f"caller-{number}", got, started)
    wait_until(lambda: pool.probe.waiting == 2, "two callers to queue")
    began = time.monotonic()
    with pytest.raises(QueueFullError, match="2 callers already wait"):
        pool.connect()
    assert time.monotonic() - began < 0.5
    assert pool.probe.timeouts == 1
    held.close()
    for thread in started:
        thread.join(timeout=15)
    assert sorted(got) == ["caller-0", "caller-1"]


def test_room_left_by_a_failed_connect_wakes_a_waiter(started: list[threading.Thread]) -> None:
    """A caller in line is told at once when a connect fails, instead of waiting out its timeout."""
    release = threading.Event()
    attempts: list[int] = []

    def creator() -> FakeConnection:
        attempts.append(1)
        if len(attempts) == 1:
            release.wait(10)
            raise OSError("connection refused")
        return FakeConnection(len(attempts))

    pool = WaitAwareQueuePool(creator, pool_size=1, max_overflow=0, timeout=10)
    failures: list[BaseException] = []

    def first() -> None:
        try:
            pool.connect()
        except OSError as exc:
            failures.append(exc)

    thread = threading.Thread(target=first, daemon=True)
    started.append(thread)
    thread.start()
    wait_until(lambda: len(attempts) == 1, "the first connect to start")
    got: list[str] = []
    checkout_in_thread(pool, "waiter", got, started)
    wait_until(lambda: pool.probe.waiting == 1, "the waiter to queue")
    began = time.monotonic()
    release.set()
    wait_until(lambda: got == ["waiter"], "the waiter to get a connection")
    assert time.monotonic() - began < 2.0
    assert len(failures) == 1


def test_lifo_takes_the_most_recently_returned_idle_connection() -> None:
    """USE_LIFO still picks among idle connections; the line only governs waiters."""
    pool = queue_pool(pool_size=2, use_lifo=True)
    first, second = pool.connect(), pool.connect()
    first_number = first.dbapi_connection.number  # type: ignore[union-attr]
    second_number = second.dbapi_connection.number  # type: ignore[union-attr]
    first.close()
    second.close()
    again = pool.connect()
    assert again.dbapi_connection.number == second_number  # type: ignore[union-attr]
    again.close()
    fifo = queue_pool(pool_size=2)
    first, second = fifo.connect(), fifo.connect()
    first_number = first.dbapi_connection.number  # type: ignore[union-attr]
    first.close()
    second.close()
    again = fifo.connect()
    assert again.dbapi_connection.number == first_number  # type: ignore[union-attr]
    again.close()


def test_recreate_keeps_the_line_settings_and_the_probe() -> None:
    """dispose() replaces the pool by recreate(): the new one has the same limits and checks."""
    pool = queue_pool(pool_size=3, max_overflow=2, max_waiting=4, use_lifo=True, timeout=7)
    fresh = pool.recreate()
    assert isinstance(fresh, WaitAwareQueuePool)
    assert (fresh.size(), fresh._max_overflow, fresh.max_waiting, fresh.timeout()) == (3, 2, 4, 7)
    assert fresh._pool.use_lifo is True
    assert fresh.probe is pool.probe
    assert fresh.checkout_checks is pool.checkout_checks


def test_a_caller_in_line_at_a_dispose_gets_a_connection(started: list[threading.Thread]) -> None:
    """A waiter of a pool retired by Engine.dispose() opens a connection when one comes back."""
    pool = queue_pool(timeout=10)
    held = pool.connect()
    got: list[str] = []
    checkout_in_thread(pool, "waiter", got, started)
    wait_until(lambda: pool.probe.waiting == 1, "the waiter to queue")
    pool.dispose()
    pool.recreate()
    began = time.monotonic()
    held.close()
    wait_until(lambda: got == ["waiter"], "the waiter to get a connection")
    assert time.monotonic() - began < 2.0
