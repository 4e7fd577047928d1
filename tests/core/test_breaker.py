"""The circuit breaker's state machine: closed, open, half-open, one trial at a time.

Plain Python over :mod:`mingus_sessions._core.breaker`, on a fake clock; the
breaker wired into scopes is tested in ``tests/scopes/test_breaker_scopes.py``.
"""

from __future__ import annotations

import contextlib
import threading

import pytest
from sqlalchemy import exc as sa_exc

from mingus_sessions._core.breaker import CircuitBreaker
from mingus_sessions._core.errors import (
    CircuitOpenError,
    DatabaseConnectionError,
    DatabaseUnavailableError,
)


class Boom(Exception):
    """A failure that is not the database's."""


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def unavailable() -> None:
    raise DatabaseUnavailableError("refused", pool="x")


def trip(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        with pytest.raises(DatabaseUnavailableError):
            breaker.call(unavailable)


def test_breaker_opens_after_threshold_and_fails_fast() -> None:
    """The breaker opens after FAILURE_THRESHOLD consecutive failures and then calls nothing."""
    clock = FakeClock()
    breaker = CircuitBreaker(3, 10.0, clock=clock)
    assert breaker.state == "closed"
    trip(breaker, 2)
    assert breaker.state == "closed"
    trip(breaker, 1)
    assert breaker.state == "open"
    ran: list[int] = []
    with pytest.raises(CircuitOpenError) as info:
        breaker.call(lambda: ran.append(1))
    assert ran == []
    assert info.value.transient is False
    assert isinstance(info.value, DatabaseConnectionError)


def test_breaker_failures_must_be_consecutive() -> None:
    """A success resets the failure count, so only consecutive failures open the breaker."""
    breaker = CircuitBreaker(3, 10.0, clock=FakeClock())
    trip(breaker, 2)
    assert breaker.call(lambda: "ok") == "ok"
    assert breaker.failures == 0
    trip(breaker, 2)
    assert breaker.state == "closed"


def test_breaker_half_open_after_recovery_timeout() -> None:
    """state already says "half_open" once recovery_timeout has passed, without any call."""
    clock = FakeClock()
    breaker = CircuitBreaker(2, 10.0, clock=clock)
    trip(breaker, 2)
    clock.now += 9.99
    assert breaker.state == "open"
    clock.now += 0.01
    assert breaker.state == "half_open"


def test_breaker_trial_success_closes() -> None:
    """A successful half-open trial closes the breaker and clears the count."""
    clock = FakeClock()
    breaker = CircuitBreaker(2, 10.0, clock=clock)
    trip(breaker, 2)
    clock.now += 10.0
    assert breaker.call(lambda: 42) == 42
    assert breaker.state == "closed"
    assert breaker.failures == 0
    assert breaker.call(lambda: 43) == 43


def test_breaker_trial_failure_reopens() -> None:
    """A failed half-open trial opens the breaker again for another recovery timeout."""
    clock = FakeClock()
    breaker = CircuitBreaker(2, 10.0, clock=clock)
    trip(breaker, 2)
    clock.now += 10.0
    trip(breaker, 1)  # the trial
    assert breaker.state == "open"
    ran: list[int] = []
    with pytest.raises(CircuitOpenError):
        breaker.call(lambda: ran.append(1))
    assert ran == []
    clock.now += 10.0
    assert breaker.state == "half_open"


def test_while_a_trial_is_out_others_are_told_to_wait_for_it() -> None:
    """retry_in() and the refusal's message count down to the trial's expiry, not to zero."""
    clock = FakeClock()
    breaker = CircuitBreaker(1, 10.0, name="main", clock=clock)
    trip(breaker, 1)
    assert breaker.retry_in() == pytest.approx(10.0)
    clock.now += 10.0
    assert breaker.before_call() is True  # the trial goes; it expires at +20 s
    clock.now += 1.0
    assert breaker.retry_in() == pytest.approx(9.0)
    with pytest.raises(CircuitOpenError, match=r"next trial in 9\.0 s"):
        breaker.before_call()
    breaker.release_trial()
    assert breaker.retry_in() == 0.0
    assert breaker.before_call() is True


def test_breaker_admits_exactly_one_trial_among_racing_threads() -> None:
    """Among 8 threads racing a half-open breaker exactly one runs the function."""
    clock = FakeClock()
    breaker = CircuitBreaker(1, 10.0, clock=clock)
    trip(breaker, 1)
    clock.now += 10.0
    start = threading.Barrier(8)
    refused = threading.Semaphore(0)
    release = threading.Event()
    lock = threading.Lock()
    ran: list[int] = []
    outcomes: list[str] = []

    def trial() -> str:
        with lock:
            ran.append(1)
        release.wait(10)  # keep the trial out while the others try
        return "ok"

    def worker() -> None:
        start.wait(10)
        try:
            result = breaker.call(trial)
        except CircuitOpenError:
            result = "refused"
            refused.release()
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for _ in range(7):
        assert refused.acquire(timeout=10)
    release.set()
    for thread in threads:
        thread.join(10)
    assert len(ran) == 1
    assert sorted(outcomes) == ["ok"] + ["refused"] * 7
    assert breaker.state == "closed"


def test_breaker_data_errors_do_not_count() -> None:
    """Data errors (IntegrityError) pass through and leave the breaker's count alone."""
    breaker = CircuitBreaker(2, 10.0, clock=FakeClock())

    def data_error() -> None:
        raise sa_exc.IntegrityError("stmt", {}, Exception())

    for _ in range(5):
        with pytest.raises(sa_exc.IntegrityError):
            breaker.call(data_error)
    assert breaker.failures == 0
    assert breaker.state == "closed"

    def other_error() -> None:
        raise Boom

    for _ in range(5):
        with pytest.raises(Boom):
            breaker.call(other_error)
    assert breaker.state == "closed"


def test_breaker_counts_correctly_under_threads() -> None:
    """8 threads failing 100 times each are all counted, and the breaker opens at the threshold."""
    breaker = CircuitBreaker(801, 10.0, clock=FakeClock())
    start = threading.Barrier(8)

    def worker() -> None:
        start.wait(10)
        for _ in range(100):
            with contextlib.suppress(DatabaseUnavailableError):
                breaker.call(unavailable)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert breaker.failures == 800
    assert breaker.state == "closed"
    trip(breaker, 1)
    assert breaker.state == "open"
