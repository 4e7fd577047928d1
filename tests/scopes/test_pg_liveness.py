"""Liveness at checkout on a real PostgreSQL: terminated backends are seen without a ping.

Backends are terminated from an admin connection (``pg_terminate_backend``),
found by the pool's ``application_name`` and this run's database. Pings are
counted on the pool's dialect: a healthy connection used a moment ago costs
none, one idle past ``PING_IDLE`` costs one, and a connection whose backend is
gone is replaced before any scope sees it, whichever way it was found.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from sqlalchemy import text

from mingus_sessions import DatabaseUnavailableError, get_engine, session_scope
from mingus_sessions._core.pools import RETURNED_AT
from mingus_sessions._core.state import state
from tests.scopes.helpers import with_pools
from tests.scopes.test_pg_faults import _pool_backends, _terminate

pytestmark = [
    pytest.mark.postgresql,
    pytest.mark.django_db(transaction=True, databases=["default", "other"]),
]


class PingCounter:
    def __init__(self) -> None:
        self.pings = 0


@pytest.fixture
def pings(monkeypatch: pytest.MonkeyPatch) -> PingCounter:
    """Counts the pings of the default pool's engine."""
    counter = PingCounter()
    dialect = get_engine().pool._dialect
    ping = dialect._do_ping_w_event

    def counted(connection: Any) -> bool:
        counter.pings += 1
        return bool(ping(connection))

    monkeypatch.setattr(dialect, "_do_ping_w_event", counted)
    return counter


def backend_pid() -> int:
    with session_scope() as session:
        return int(session.execute(text("SELECT pg_backend_pid()")).scalar_one())


def make_idle(seconds: float) -> None:
    """Pretend each idle connection of the default pool was returned ``seconds`` ago."""
    for record in list(get_engine().pool._pool._idle):  # type: ignore[attr-defined]
        record.__dict__[RETURNED_AT] = time.monotonic() - seconds


def test_a_connection_used_a_moment_ago_costs_no_ping(pings: PingCounter) -> None:
    """PRE_PING=True (the default): consecutive scopes reuse one connection with no ping."""
    first = backend_pid()
    for _ in range(20):
        assert backend_pid() == first
    assert pings.pings == 0


def test_a_backend_terminated_right_after_use_is_replaced_without_a_ping(
    admin: Any, db_name: str, pings: PingCounter
) -> None:
    """R1 within PING_IDLE: the driver sees the server's goodbye; the scope gets a new backend."""
    victim = backend_pid()
    _terminate(admin, victim)
    replacement = backend_pid()
    assert replacement != victim
    assert pings.pings == 0
    assert state.sessions.snapshot()["failed_sessions"] == 0
    assert victim not in _pool_backends(admin, db_name)


def test_every_idle_backend_terminated_costs_no_scope_an_error(
    admin: Any, db_name: str, pings: PingCounter
) -> None:
    """R1, all at once: three idle connections terminated; the next scopes all succeed."""
    engine = get_engine()
    held = [engine.connect() for _ in range(3)]
    old = {int(c.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()) for c in held}
    for connection in held:
        connection.close()
    for pid in old:
        _terminate(admin, pid)
    seen = {backend_pid() for _ in range(10)}
    assert not seen & old
    assert pings.pings == 0
    assert state.sessions.snapshot()["failed_sessions"] == 0
    assert engine.pool.checkedout() == 0


def test_past_ping_idle_a_real_ping_is_sent(admin: Any, pings: PingCounter) -> None:
    """A connection idle longer than PING_IDLE is pinged; a dead one is replaced."""
    first = backend_pid()
    make_idle(5.0)
    assert backend_pid() == first
    assert pings.pings == 1
    make_idle(5.0)
    _terminate(admin, first)
    assert backend_pid() != first
    assert pings.pings == 2


def test_always_pings_on_every_checkout(settings: Any) -> None:
    """PRE_PING="always": SQLAlchemy's behaviour, one ping per checkout of an idle connection."""
    with_pools(settings, pinged={"DATABASE": "default", "PRE_PING": "always"})
    engine = get_engine("pinged")
    dialect = engine.pool._dialect
    ping = dialect._do_ping_w_event
    count = [0]

    def counted(connection: Any) -> bool:
        count[0] += 1
        return bool(ping(connection))

    dialect._do_ping_w_event = counted  # type: ignore[method-assign]
    try:
        for _ in range(5):
            with session_scope("pinged") as session:
                session.execute(text("SELECT 1"))
    finally:
        del dialect._do_ping_w_event
    assert count[0] == 4  # the first checkout opened the connection


def test_without_pre_ping_a_terminated_backend_fails_the_scope(
    settings: Any, admin: Any, db_name: str
) -> None:
    """The control: PRE_PING=False hands out the dead connection and the scope fails."""
    with_pools(settings, unchecked={"DATABASE": "default", "PRE_PING": False})
    with session_scope("unchecked") as session:
        victim = int(session.execute(text("SELECT pg_backend_pid()")).scalar_one())
    _terminate(admin, victim)
    with pytest.raises(DatabaseUnavailableError), session_scope("unchecked") as session:
        session.execute(text("SELECT 1"))
