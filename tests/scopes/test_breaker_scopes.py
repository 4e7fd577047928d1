"""The circuit breaker through scopes: an unreachable server, a trial that proves nothing, and
one count per failure, against its own pool's breaker only."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy import exc as sa_exc

from mingus_sessions import (
    CircuitOpenError,
    DatabaseUnavailableError,
    get_circuit_breaker,
    get_engine,
    session_scope,
)
from mingus_sessions._core.state import state
from tests.helpers import add_unreachable_alias
from tests.scopes.helpers import Boom, checked_out, db, with_pools


@pytest.fixture
def dead_pool(settings: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    """A pool "dead" on a PostgreSQL alias whose port nothing listens on."""
    add_unreachable_alias(monkeypatch, "dead")
    with_pools(
        settings,
        dead={"DATABASE": "dead", "POOL_SIZE": 2, "MAX_OVERFLOW": 0, "POOL_TIMEOUT": 10},
        CIRCUIT_BREAKER={"ENABLED": True, "FAILURE_THRESHOLD": 3, "RECOVERY_TIMEOUT": 0.5},
    )
    return "dead"


@db
def test_breaker_in_session_scope_against_unreachable_server(dead_pool: str) -> None:
    """Against a refused port: 3 fast DatabaseUnavailableErrors, then fail-fast, then one trial."""
    pytest.importorskip("psycopg")
    engine = get_engine(dead_pool)
    attempts: list[int] = []

    @event.listens_for(engine, "do_connect")
    def count(*args: Any) -> None:
        attempts.append(1)

    def select_one() -> None:
        with session_scope(dead_pool) as session:
            session.execute(text("SELECT 1"))

    for n in range(1, 4):
        started = time.monotonic()
        with pytest.raises(DatabaseUnavailableError) as info:
            select_one()
        assert time.monotonic() - started < 2.0  # refused at once, not the pool's 10 s
        assert type(info.value) is DatabaseUnavailableError
        assert info.value.pool == dead_pool
        assert isinstance(info.value.__cause__, sa_exc.OperationalError)
        assert len(attempts) == n
    breaker = get_circuit_breaker(dead_pool)
    assert breaker.state == "open"
    assert breaker.failures == 3

    with pytest.raises(CircuitOpenError) as fast:
        select_one()
    assert fast.value.pool == dead_pool
    assert len(attempts) == 3
    assert breaker.failures == 3

    time.sleep(0.55)
    assert breaker.state == "half_open"
    start = threading.Barrier(4)
    outcomes: list[BaseException] = []
    lock = threading.Lock()

    def racer() -> None:
        start.wait(10)
        try:
            select_one()
        except BaseException as exc:
            with lock:
                outcomes.append(exc)

    threads = [threading.Thread(target=racer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    kinds = sorted(type(exc).__name__ for exc in outcomes)
    assert kinds == ["CircuitOpenError"] * 3 + ["DatabaseUnavailableError"]
    assert len(attempts) == 4  # exactly one trial connected
    assert breaker.state == "open"
    assert checked_out(dead_pool) == 0
    assert state.sessions.active_sessions == 0


@db
def test_a_trial_that_fails_without_proving_anything_hands_the_trial_to_the_next_caller(
    settings: Any,
) -> None:
    """A half-open trial that fails for a reason that is not the database's gives the trial back.

    Otherwise every caller fails fast for another recovery timeout against a
    database that may well be back.
    """
    with_pools(
        settings,
        CIRCUIT_BREAKER={"ENABLED": True, "FAILURE_THRESHOLD": 1, "RECOVERY_TIMEOUT": 0.05},
    )
    breaker = get_circuit_breaker()
    breaker.record_failure()
    assert breaker.state == "open"
    time.sleep(0.06)
    engine = get_engine()

    def refuse(*args: Any) -> None:
        raise Boom("not the database's fault")

    event.listen(engine, "checkout", refuse)
    try:
        with pytest.raises(Boom), session_scope():
            pass
    finally:
        event.remove(engine, "checkout", refuse)
    assert breaker.state == "half_open"
    with session_scope() as session:  # the next caller is the trial, at once
        session.execute(text("SELECT 1"))
    assert breaker.state == "closed"
    assert checked_out() == 0


@db
def test_a_failure_of_another_pool_counts_only_against_that_pools_breaker(
    dead_pool: str,
) -> None:
    """A scope of an unreachable pool fails inside a scope of a healthy one: one breaker counts."""
    pytest.importorskip("psycopg")
    with pytest.raises(DatabaseUnavailableError), session_scope() as healthy:
        healthy.execute(text("SELECT 1"))
        with session_scope(dead_pool) as dead:
            dead.execute(text("SELECT 1"))
    assert get_circuit_breaker(dead_pool).failures == 1
    assert get_circuit_breaker().failures == 0
    assert checked_out() == 0


@db
def test_a_failure_counts_once_against_its_breaker_whatever_scopes_it_leaves(
    dead_pool: str,
) -> None:
    """An independent scope's connect failure, raised through a scope of the same pool."""
    pytest.importorskip("psycopg")
    outer, inner = session_scope(dead_pool), session_scope(dead_pool, independent=True)
    with pytest.raises(DatabaseUnavailableError), outer, inner as session:
        session.execute(text("SELECT 1"))
    assert get_circuit_breaker(dead_pool).failures == 1
