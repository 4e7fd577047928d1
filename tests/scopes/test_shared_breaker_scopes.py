"""``CIRCUIT_BREAKER["SHARED"]`` in one process, through Django's cache and the scopes.

"Another process" is a second :class:`SharedCircuitBreaker` with a
:class:`FleetBreakerState` of its own on the same cache (a local-memory cache is
one per process, which is all these tests need). Real processes on Redis are in
``tests/fleet/test_shared_breaker_processes.py``.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pytest
from django.core.cache import caches
from sqlalchemy import event, text

from mingus_sessions import (
    CircuitOpenError,
    DatabaseUnavailableError,
    get_circuit_breaker,
    get_engine,
    session_scope,
)
from mingus_sessions import fleet_breaker as fleet_breaker_module
from mingus_sessions._core import shared_breaker as shared_breaker_module
from mingus_sessions._core.shared_breaker import READ_INTERVAL, SharedCircuitBreaker
from mingus_sessions.fleet_breaker import CACHE_DEADLINE, FleetBreakerState
from tests.fleet.processes import free_port
from tests.helpers import add_unreachable_alias
from tests.scopes.helpers import db, with_pools


def shared_dead_pool(
    settings: Any, monkeypatch: pytest.MonkeyPatch, threshold: int = 100, recovery: float = 60.0
) -> str:
    """A pool "dead" on a refused PostgreSQL port, its breaker shared through the FLEET cache."""
    pytest.importorskip("psycopg")
    add_unreachable_alias(monkeypatch, "dead")
    with_pools(
        settings,
        dead={"DATABASE": "dead", "POOL_SIZE": 2, "MAX_OVERFLOW": 0, "POOL_TIMEOUT": 10},
        CIRCUIT_BREAKER={
            "FAILURE_THRESHOLD": threshold,
            "RECOVERY_TIMEOUT": recovery,
            "SHARED": True,
        },
    )
    caches["default"].clear()
    return "dead"


def another_process(threshold: int = 2, recovery: float = 60.0) -> SharedCircuitBreaker:
    return SharedCircuitBreaker(
        threshold, recovery, name="dead", shared=FleetBreakerState("default")
    )


def connect_attempts(pool: str) -> list[int]:
    attempts: list[int] = []

    @event.listens_for(get_engine(pool), "do_connect")
    def count(*args: Any) -> None:
        attempts.append(1)

    return attempts


def select_one(pool: str) -> None:
    with session_scope(pool) as session:
        session.execute(text("SELECT 1"))


@db
def test_another_process_opening_the_breaker_fails_this_one_fast_within_a_second(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool = shared_dead_pool(settings, monkeypatch)
    assert isinstance(get_circuit_breaker(pool), SharedCircuitBreaker)
    attempts = connect_attempts(pool)
    with pytest.raises(DatabaseUnavailableError):
        select_one(pool)  # this process reads the shared state here: nothing yet
    assert attempts == [1]
    other = another_process()
    other.record_failure()
    other.record_failure()
    opened = time.monotonic()
    while True:
        try:
            select_one(pool)
        except CircuitOpenError:
            break
        except DatabaseUnavailableError:
            pass  # not read again yet: a connection attempt of this process's own
        time.sleep(0.02)
    assert time.monotonic() - opened <= READ_INTERVAL + 0.2
    tried = len(attempts)
    for _ in range(20):
        with pytest.raises(CircuitOpenError):
            select_one(pool)
    assert len(attempts) == tried


@db
def test_a_process_starting_while_the_fleet_is_open_never_connects(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool = shared_dead_pool(settings, monkeypatch)
    other = another_process()
    other.record_failure()
    other.record_failure()
    attempts = connect_attempts(pool)
    with pytest.raises(CircuitOpenError, match="open after 2 consecutive connection failures"):
        select_one(pool)
    assert attempts == []


@db
def test_one_process_of_many_gets_the_half_open_trial(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Eight processes half-open at once race for the lease in the cache: one wins."""
    shared_dead_pool(settings, monkeypatch)
    processes = [another_process(recovery=0.2) for _ in range(8)]
    processes[0].record_failure()
    processes[0].record_failure()
    for process in processes[1:]:
        with pytest.raises(CircuitOpenError):
            process.before_call()
    time.sleep(0.25)  # the recovery timeout passing is the point
    start = threading.Barrier(len(processes))
    answers: list[bool | None] = []

    def ask(process: SharedCircuitBreaker) -> None:
        start.wait()
        try:
            answers.append(process.before_call())
        except CircuitOpenError:
            answers.append(None)

    threads = [threading.Thread(target=ask, args=(p,)) for p in processes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answers, key=str) == [None] * 7 + [True]


@db
def test_reads_the_cache_at_most_once_a_second_never_per_scope(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    with_pools(settings, CIRCUIT_BREAKER={"SHARED": True})
    real = caches["default"]
    calls: list[str] = []

    class Counting:
        def __getattr__(self, name: str) -> Any:
            calls.append(name)
            return getattr(real, name)

    monkeypatch.setattr(FleetBreakerState, "_cache", lambda self: Counting())
    scopes = 0
    started = time.monotonic()
    while (elapsed := time.monotonic() - started) < 1.5:
        with session_scope() as session:
            session.execute(text("SELECT 1"))
        scopes += 1
    assert scopes > 50
    assert calls.count("get") == len(calls)  # nothing is written while all is well
    assert 2 <= len(calls) <= elapsed / READ_INTERVAL + 1


@db
def test_an_unreachable_cache_leaves_per_process_breakers_and_is_logged_once(
    settings: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    pool = shared_dead_pool(settings, monkeypatch, threshold=2, recovery=0.3)
    settings.CACHES = {
        **settings.CACHES,
        "fleet": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{free_port()}/0",
        },
    }
    settings.MINGUS_SESSIONS = {**settings.MINGUS_SESSIONS, "FLEET": {"CACHE": "fleet"}}
    # Every call reads, and every read tries the cache again: still one line.
    monkeypatch.setattr(shared_breaker_module, "READ_INTERVAL", 0.0)
    monkeypatch.setattr(fleet_breaker_module, "UNREACHABLE_PAUSE", 0.0)
    attempts = connect_attempts(pool)
    caplog.set_level(logging.INFO, logger="mingus_sessions")
    for _ in range(2):
        with pytest.raises(DatabaseUnavailableError):
            select_one(pool)
    for _ in range(10):  # opened by this process's own failures
        with pytest.raises(CircuitOpenError):
            select_one(pool)
    assert len(attempts) == 2
    time.sleep(0.35)  # the recovery timeout passing is the point
    with pytest.raises(DatabaseUnavailableError):
        select_one(pool)  # this process's own trial: no lease to ask for
    assert len(attempts) == 3
    lines = [r for r in caplog.records if "cannot be reached" in r.getMessage()]
    assert len(lines) == 1
    assert lines[0].levelno == logging.WARNING
    assert 'fleet cache "fleet"' in lines[0].getMessage()


@db
def test_the_cache_back_is_logged_once_and_shared_again(
    settings: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    pool = shared_dead_pool(settings, monkeypatch)
    monkeypatch.setattr(shared_breaker_module, "READ_INTERVAL", 0.0)
    monkeypatch.setattr(fleet_breaker_module, "UNREACHABLE_PAUSE", 0.0)
    real = caches["default"]
    down = True

    class Flaky:
        def __getattr__(self, name: str) -> Any:
            if down:
                raise ConnectionError("refused")
            return getattr(real, name)

    monkeypatch.setattr(FleetBreakerState, "_cache", lambda self: Flaky())
    caplog.set_level(logging.INFO, logger="mingus_sessions")
    for _ in range(3):
        with pytest.raises(DatabaseUnavailableError):
            select_one(pool)
    down = False
    other = another_process()
    other.record_failure()
    other.record_failure()
    with pytest.raises(CircuitOpenError):
        select_one(pool)
    messages = [r.getMessage() for r in caplog.records]
    assert sum("cannot be reached" in m for m in messages) == 1
    assert sum("reachable again" in m for m in messages) == 1


@db
def test_a_cache_that_hangs_holds_a_scope_at_most_its_deadline(
    settings: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A read that never answers counts as an unreachable cache after CACHE_DEADLINE."""
    with_pools(settings, CIRCUIT_BREAKER={"SHARED": True})
    never = threading.Event()

    class Hung:
        def get(self, *args: Any, **kwargs: Any) -> Any:
            never.wait(10)
            return None

    monkeypatch.setattr(FleetBreakerState, "_cache", lambda self: Hung())
    try:
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="mingus_sessions"):
            for _ in range(3):
                with session_scope() as session:
                    session.execute(text("SELECT 1"))
        assert time.monotonic() - started < CACHE_DEADLINE + 0.4
        assert sum("cannot be reached" in r.getMessage() for r in caplog.records) == 1
    finally:
        never.set()  # let the runner's thread go
