"""DatabaseTask in-process: transient errors retried through Celery, and the retry policy (C2)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from celery.exceptions import Retry, SoftTimeLimitExceeded
from sqlalchemy import exc as sa_exc

from mingus_sessions import (
    AfterCommitError,
    AuthenticationError,
    CircuitOpenError,
    ConfigurationError,
    ConnectionTimeoutError,
    DatabaseUnavailableError,
    DeadlockError,
    LockTimeoutError,
    PoolExhaustedError,
    SerializationError,
    SessionError,
    TransactionError,
    session_scope,
)
from mingus_sessions._core.state import state
from mingus_sessions.celery import classify_error, get_retry_delay, should_retry
from tests.celery.inprocess import (
    ACTIONS,
    CALLS,
    DB,
    DB_OTHER,
    always_deadlocks,
    assert_closed,
    checked_out,
    driver_error,
    no_db_retries,
    raises,
    scripted,
    titles,
)

#: The queue drained and the calls' records cleared around every test (tests/celery/conftest.py).
pytestmark = pytest.mark.usefixtures("_clean")


# -- transient errors: retried through Celery -------------------------------------------------


TRANSIENT_ERRORS = {
    "DeadlockError": lambda: DeadlockError("injected deadlock", pool="main"),
    "SerializationError": lambda: SerializationError("injected", pool="main"),
    "driver-40P01": lambda: driver_error(sa_exc.OperationalError, "40P01"),
    "driver-40001": lambda: driver_error(sa_exc.OperationalError, "40001"),
    "driver-57P01": lambda: driver_error(sa_exc.OperationalError, "57P01"),
}


@pytest.mark.parametrize("make_error", TRANSIENT_ERRORS.values(), ids=TRANSIENT_ERRORS.keys())
@DB
def test_transient_error_is_retried_by_celery_and_committed_once(
    make_error: Callable[[], BaseException], retry_spy: list[dict[str, Any]]
) -> None:
    ACTIONS.extend([raises(make_error()), raises(make_error()), None])
    result = scripted.apply(args=("effect",))
    assert result.successful(), result.traceback
    assert [call["retries"] for call in CALLS] == [0, 1, 2]
    # Each attempt wrote the same unique title: the failed ones were rolled back.
    assert titles() == ["effect"]
    assert state.sessions.retries == 2
    assert len({id(call["session"]) for call in CALLS}) == 3
    # The countdown handed to Celery is get_retry_delay's, for attempts 0 and 1.
    assert [spy["attempt"] for spy in retry_spy] == [0, 1]
    for spy in retry_spy:
        assert spy["countdown"] == spy["delay"]
        assert 0.0 <= spy["delay"] <= 0.1 * 2 ** spy["attempt"]  # RETRY defaults, jittered
        assert isinstance(spy["exc"], DeadlockError | SerializationError | DatabaseUnavailableError)
    assert_closed()


@DB
def test_db_max_retries_is_respected_then_the_error_is_raised(
    retry_spy: list[dict[str, Any]],
) -> None:
    result = always_deadlocks.apply(args=("never",))
    assert result.failed()
    assert isinstance(result.result, DeadlockError)
    assert isinstance(result.result.__cause__, sa_exc.OperationalError)
    assert [call["retries"] for call in CALLS] == [0, 1, 2]
    assert state.sessions.retries == 2
    assert [spy.get("max_retries") for spy in retry_spy] == [2, 2]
    assert titles() == []
    assert_closed()
    # With propagation (task_eager_propagates / throw=True) Celery raises its Retry
    # instead of running the retry; it carries the translated error and the countdown.
    with pytest.raises(Retry) as raised:
        always_deadlocks.apply(args=("never",), throw=True)
    assert isinstance(raised.value.exc, DeadlockError)
    assert raised.value.when == retry_spy[-1]["countdown"]
    assert titles() == []
    assert_closed()


@DB
def test_max_retries_default_to_the_retry_setting(settings: Any) -> None:
    settings.MINGUS_SESSIONS = {
        **settings.MINGUS_SESSIONS,
        "RETRY": {"MAX_RETRIES": 1, "BASE_DELAY": 0.01, "MAX_DELAY": 0.05, "JITTER": True},
    }
    ACTIONS.extend([raises(DeadlockError("x", pool="main"))] * 5)
    result = scripted.apply(args=("limited",))
    assert result.failed()
    assert [call["retries"] for call in CALLS] == [0, 1]
    assert state.sessions.retries == 1
    assert_closed()


def open_breaker(pool: str) -> None:
    """Count enough connection failures against ``pool``'s breaker to open it."""
    from mingus_sessions import get_circuit_breaker

    breaker = get_circuit_breaker(pool)
    for _ in range(breaker.failure_threshold):
        breaker.record_failure()
    assert breaker.state == "open"


@DB
def test_open_circuit_breaker_is_retried_after_its_recovery(
    retry_spy: list[dict[str, Any]],
) -> None:
    """CircuitOpenError: not worth an early retry, but worth one once the breaker recovers."""
    open_breaker("main")
    result = scripted.apply(args=("breaker",))
    assert result.failed()
    assert isinstance(result.result, CircuitOpenError)
    assert CALLS == []  # every attempt failed fast, before the task body wrote anything
    assert [spy["attempt"] for spy in retry_spy] == [0, 1, 2]  # RETRY["MAX_RETRIES"]
    for spy in retry_spy:
        # The countdown waits for the half-open trial (RECOVERY_TIMEOUT is 60 s).
        assert spy["countdown"] >= 55.0
        assert spy["delay"] <= 0.1 * 2 ** spy["attempt"]
    assert state.sessions.retries == 3
    assert_closed()


@DB_OTHER
def test_open_breaker_of_another_pool_is_retried_after_that_breakers_recovery(
    retry_spy: list[dict[str, Any]],
) -> None:
    """A task on its own pool whose scope of another pool meets that pool's open breaker."""
    from mingus_sessions import get_circuit_breaker

    open_breaker("other")
    assert get_circuit_breaker("main").state == "closed"

    def use_the_other_pool() -> None:
        with session_scope("other"):
            pass

    ACTIONS.extend([use_the_other_pool] * 4)
    result = scripted.apply(args=("other-pool-down",))
    assert result.failed()
    assert isinstance(result.result, CircuitOpenError)
    assert result.result.pool == "other"
    assert [spy["attempt"] for spy in retry_spy] == [0, 1, 2]
    for spy in retry_spy:
        assert spy["countdown"] >= 55.0  # the other pool's RECOVERY_TIMEOUT is 60 s
    assert titles() == []


@DB
def test_integrity_error_is_never_retried() -> None:
    assert scripted.apply(args=("taken",)).successful()
    result = scripted.apply(args=("taken",))
    assert result.failed()
    assert isinstance(result.result, sa_exc.IntegrityError)
    assert [call["retries"] for call in CALLS] == [0, 0]
    assert state.sessions.retries == 0
    assert titles() == ["taken"]
    assert_closed()


@pytest.mark.parametrize(
    "error",
    [
        ValueError("not a database error"),
        AuthenticationError("bad password", pool="main"),
        driver_error(sa_exc.ProgrammingError, "42P01"),
        driver_error(sa_exc.DataError, "22001"),
    ],
    ids=["ValueError", "AuthenticationError", "ProgrammingError", "DataError"],
)
@DB
def test_non_transient_errors_fail_at_once(error: BaseException) -> None:
    ACTIONS.append(raises(error))
    result = scripted.apply(args=("x",))
    assert result.failed()
    assert len(CALLS) == 1
    assert state.sessions.retries == 0
    assert_closed()


@DB
def test_db_retry_transient_false_fails_at_once() -> None:
    result = no_db_retries.apply(args=("x",))
    assert result.failed()
    assert isinstance(result.result, DeadlockError)
    assert len(CALLS) == 1
    assert state.sessions.retries == 0
    assert_closed()


@DB
def test_retry_leaves_no_session_open_between_attempts(retry_spy: list[dict[str, Any]]) -> None:
    """Between attempts nothing is checked out: each attempt opens its own session."""
    seen: list[int] = []
    ACTIONS.extend(
        [
            raises(DeadlockError("x", pool="main")),
            lambda: seen.append(checked_out()),
        ]
    )
    assert scripted.apply(args=("retried",)).successful()
    assert seen == [1]  # only the second attempt's own connection
    assert_closed()


# -- the retry policy --------------------------------------------------------------------------


def test_get_retry_delay_is_exponential_and_capped(settings: Any) -> None:
    settings.MINGUS_SESSIONS = {
        **settings.MINGUS_SESSIONS,
        "RETRY": {"MAX_RETRIES": 3, "BASE_DELAY": 0.5, "MAX_DELAY": 3.0, "JITTER": False},
    }
    error = DeadlockError("x")
    assert [get_retry_delay(error, attempt) for attempt in range(6)] == [
        0.5,
        1.0,
        2.0,
        3.0,
        3.0,
        3.0,
    ]
    assert get_retry_delay(error, 500) == 3.0  # no overflow for absurd attempts


def test_get_retry_delay_jitter_stays_within_bounds(settings: Any) -> None:
    settings.MINGUS_SESSIONS = {
        **settings.MINGUS_SESSIONS,
        "RETRY": {"MAX_RETRIES": 3, "BASE_DELAY": 0.5, "MAX_DELAY": 3.0, "JITTER": True},
    }
    error = DeadlockError("x")
    for attempt, ceiling in [(0, 0.5), (1, 1.0), (2, 2.0), (3, 3.0), (10, 3.0)]:
        delays = [get_retry_delay(error, attempt) for _ in range(200)]
        assert all(0.0 <= delay <= ceiling for delay in delays)
        assert len(set(delays)) > 100  # jittered, not a constant
        assert max(delays) > ceiling / 2


def test_get_retry_delay_defaults() -> None:
    """RETRY defaults: base 0.1 s, cap 30 s, jitter on."""
    assert all(0.0 <= get_retry_delay(DeadlockError("x"), 0) <= 0.1 for _ in range(50))
    assert all(0.0 <= get_retry_delay(DeadlockError("x"), 20) <= 30.0 for _ in range(50))


CLASSIFIED = [
    (DeadlockError("x"), "deadlock"),
    (driver_error(sa_exc.OperationalError, "40P01"), "deadlock"),
    (SerializationError("x"), "serialization"),
    (driver_error(sa_exc.OperationalError, "40001"), "serialization"),
    (LockTimeoutError("x"), "lock_timeout"),
    (driver_error(sa_exc.OperationalError, "55P03"), "lock_timeout"),
    (PoolExhaustedError("x"), "pool_exhausted"),
    (sa_exc.TimeoutError("QueuePool limit reached"), "pool_exhausted"),
    (CircuitOpenError("x"), "circuit_open"),
    (AuthenticationError("x"), "authentication"),
    (driver_error(sa_exc.OperationalError, "28P01"), "authentication"),
    (DatabaseUnavailableError("x"), "connection"),
    (ConnectionTimeoutError("x"), "connection"),
    (driver_error(sa_exc.OperationalError, "57P01"), "connection"),
    (driver_error(sa_exc.IntegrityError, "23505"), "integrity"),
    (driver_error(sa_exc.DataError, "22001"), "data"),
    (driver_error(sa_exc.ProgrammingError, "42P01"), "programming"),
    (driver_error(sa_exc.OperationalError, "XX000"), "database"),
    (TransactionError("x"), "database"),
    (SessionError("x"), "database"),
    (AfterCommitError("x"), "database"),
    (ValueError("x"), "other"),
    (KeyboardInterrupt(), "other"),
]


@pytest.mark.parametrize(("error", "name"), CLASSIFIED, ids=[n for _, n in CLASSIFIED])
def test_classify_error(error: BaseException, name: str) -> None:
    assert classify_error(error) == name


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (DeadlockError("x"), True),
        (SerializationError("x"), True),
        (LockTimeoutError("x"), True),
        (PoolExhaustedError("x"), True),
        (DatabaseUnavailableError("x"), True),
        (driver_error(sa_exc.OperationalError, "40P01"), True),
        (driver_error(sa_exc.OperationalError, "57P01"), True),
        (driver_error(sa_exc.IntegrityError, "23505"), False),
        (driver_error(sa_exc.ProgrammingError, "42P01"), False),
        (AuthenticationError("x"), False),
        (ConfigurationError("x"), False),
        (CircuitOpenError("x"), False),
        (ValueError("x"), False),
        (SoftTimeLimitExceeded(), False),
        (AfterCommitError("x"), False),
    ],
)
def test_should_retry(error: BaseException, expected: bool) -> None:
    assert should_retry(error) is expected
