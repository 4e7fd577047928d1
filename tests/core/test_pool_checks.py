"""What the queue pool checks at checkout: the driver's look without a round trip, or a ping.

Stand-in connections and a stand-in dialect count what the pool does; the
check against a real server (terminated backends, a restart, a standby) is in
tests/scopes/test_pg_liveness.py and the fault suite.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from sqlalchemy.pool.base import _ConnDialect

from mingus_sessions._core.pools import RETURNED_AT, CheckoutChecks, WaitAwareQueuePool
from tests.core.test_pool_handoff import Creator, FakeConnection


class CountingDialect(_ConnDialect):
    """Pings that answer as ``answers`` says, counted."""

    def __init__(self, answer: bool = True) -> None:
        self.pings = 0
        self.answer = answer

    def _do_ping_w_event(self, dbapi_connection: Any) -> bool:
        self.pings += 1
        return self.answer


class Alive:
    """A liveness check that answers as told, counted."""

    def __init__(self) -> None:
        self.calls = 0
        self.dead: set[int] = set()
        self.error: BaseException | None = None

    def __call__(self, connection: FakeConnection) -> bool:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return connection.number not in self.dead


def checked_pool(
    pre_ping: bool | str = True, ping_idle: float = 1.0, answer: bool = True, **kw: Any
) -> tuple[WaitAwareQueuePool, Alive, CountingDialect, Creator]:
    alive = Alive()
    dialect = CountingDialect(answer)
    creator = Creator()
    pool = WaitAwareQueuePool(
        creator,
        pool_size=2,
        max_overflow=0,
        checkout_checks=CheckoutChecks(pre_ping=pre_ping, alive=alive, ping_idle=ping_idle),
        dialect=dialect,
        **kw,
    )
    return pool, alive, dialect, creator


def used_once(pool: WaitAwareQueuePool) -> int:
    """Open a connection, return it; its number."""
    connection = pool.connect()
    number: int = connection.dbapi_connection.number  # type: ignore[union-attr]
    connection.close()
    return number


def idle_for(pool: WaitAwareQueuePool, seconds: float) -> None:
    """Pretend every idle connection was returned ``seconds`` ago."""
    for record in list(pool._pool._idle):
        record.__dict__[RETURNED_AT] = time.monotonic() - seconds


def test_a_new_connection_is_not_checked() -> None:
    """A connection just opened is used as is, as SQLAlchemy's pre-ping skips fresh ones."""
    pool, alive, dialect, _ = checked_pool()
    used_once(pool)
    assert (alive.calls, dialect.pings) == (0, 0)


def test_a_connection_used_recently_is_checked_without_a_round_trip() -> None:
    """Idle under PING_IDLE: the driver's check, no ping."""
    pool, alive, dialect, _ = checked_pool()
    number = used_once(pool)
    assert used_once(pool) == number
    assert (alive.calls, dialect.pings) == (1, 0)


def test_a_connection_idle_past_ping_idle_is_pinged() -> None:
    """Idle over PING_IDLE: a real ping, not the driver's check."""
    pool, alive, dialect, _ = checked_pool(ping_idle=1.0)
    used_once(pool)
    idle_for(pool, 1.5)
    used_once(pool)
    assert (alive.calls, dialect.pings) == (0, 1)


def test_always_pings_every_idle_checkout() -> None:
    """PRE_PING="always": SQLAlchemy's behaviour, a ping each time."""
    pool, alive, dialect, _ = checked_pool(pre_ping="always")
    used_once(pool)
    used_once(pool)
    used_once(pool)
    assert (alive.calls, dialect.pings) == (0, 2)


def test_false_checks_nothing() -> None:
    pool, alive, dialect, _ = checked_pool(pre_ping=False)
    used_once(pool)
    idle_for(pool, 10)
    used_once(pool)
    assert (alive.calls, dialect.pings) == (0, 0)


def test_without_a_driver_check_the_pool_pings() -> None:
    """No liveness check for the driver (SQLite, MySQL): PRE_PING=True pings, as before."""
    dialect = CountingDialect()
    pool = WaitAwareQueuePool(
        Creator(),
        pool_size=1,
        max_overflow=0,
        checkout_checks=CheckoutChecks(pre_ping=True, alive=None),
        dialect=dialect,
    )
    used_once(pool)
    used_once(pool)
    assert dialect.pings == 1


def test_a_dead_connection_is_replaced_before_use() -> None:
    """The check says dead: the connection is closed and a new one is handed out instead."""
    pool, alive, _, creator = checked_pool()
    number = used_once(pool)
    closed = pool._pool._idle[0].dbapi_connection
    alive.dead.add(number)
    connection = pool.connect()
    assert connection.dbapi_connection.number == 2  # type: ignore[union-attr]
    assert closed.closed
    assert creator.made == 2
    assert pool._invalidate_time == 0  # only that connection: the others check themselves
    connection.close()


def test_a_failed_ping_replaces_every_older_connection() -> None:
    """As pool_pre_ping: a ping that fails marks every connection opened before it stale."""
    pool, _, _, _ = checked_pool(pre_ping="always", answer=False)
    used_once(pool)
    before = time.time()
    connection = pool.connect()
    assert connection.dbapi_connection.number == 2  # type: ignore[union-attr]
    assert pool._invalidate_time >= before
    connection.close()


def test_an_error_in_the_check_reaches_the_caller_and_frees_the_slot() -> None:
    """Not a disconnect: the error is raised, the connection discarded, the pool whole."""
    pool, alive, _, _ = checked_pool()
    used_once(pool)
    alive.error = RuntimeError("driver state unknown")
    with pytest.raises(RuntimeError, match="driver state unknown"):
        pool.connect()
    assert pool.checkedout() == 0
    alive.error = None
    connection = pool.connect()
    assert connection.dbapi_connection.number == 2  # type: ignore[union-attr]
    connection.close()


def test_a_connection_due_for_recycling_is_not_checked() -> None:
    """POOL_RECYCLE replaces it anyway: checking it first would be a wasted look."""
    pool, alive, dialect, creator = checked_pool(recycle=60)
    used_once(pool)
    pool._pool._idle[0].starttime -= 120
    used_once(pool)
    assert (alive.calls, dialect.pings) == (0, 0)
    assert creator.made == 2
