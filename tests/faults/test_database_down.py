"""R3: the database down for a while, then back (the owned cluster is stopped and started).

With the server stopped its port is closed, so every connection attempt is
refused at once: scopes must fail fast with ``DatabaseUnavailableError`` (not
wait for ``POOL_TIMEOUT``), the breaker must open after ``FAILURE_THRESHOLD``
of them and then fail fast without connecting, and the health endpoint must
say 503. Once the server is back, a single half-open trial closes the breaker.
"""

from __future__ import annotations

import time
from typing import Any, TypeVar

import pytest
from django.test import Client
from sqlalchemy import text

from mingus_sessions import (
    CircuitOpenError,
    DatabaseUnavailableError,
    SessionError,
    get_circuit_breaker,
    session_scope,
)
from mingus_sessions._core.state import state
from tests.faults.conftest import Cluster, checked_out, configure
from tests.helpers import poll

pytestmark = [
    pytest.mark.postgresql,
    pytest.mark.django_db(transaction=True, databases=["default", "other"]),
]

POOL_TIMEOUT = 10
THRESHOLD = 3
RECOVERY = 1.0
TOKEN = "faults-metrics-token-0123456789"
#: "Far below the pool timeout": a refused connect takes milliseconds.
FAIL_FAST = 1.0
E = TypeVar("E", bound=SessionError)


@pytest.fixture(autouse=True)
def _settings(settings: Any) -> None:
    configure(
        settings,
        breaker={"FAILURE_THRESHOLD": THRESHOLD, "RECOVERY_TIMEOUT": RECOVERY},
        main={"POOL_TIMEOUT": POOL_TIMEOUT, "CONNECT_ARGS": {"connect_timeout": 5}},
    )
    settings.MINGUS_SESSIONS = {**settings.MINGUS_SESSIONS, "METRICS_TOKEN": TOKEN}


def write(title: str) -> None:
    with session_scope() as s:
        s.execute(text("INSERT INTO testapp_note (title, body) VALUES (:t, '')"), {"t": title})


def titles() -> list[str]:
    with session_scope() as s:
        return list(s.execute(text("SELECT title FROM testapp_note ORDER BY title")).scalars())


def timed_failure(expected: type[E]) -> tuple[E, float]:
    """Run one writing scope that must raise ``expected``; the error and how long it took."""
    started = time.monotonic()
    with pytest.raises(expected) as info:
        write("never")
    return info.value, time.monotonic() - started


def health(client: Client) -> tuple[int, dict[str, Any], float]:
    started = time.monotonic()
    response = client.get("/health/database", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    return response.status_code, response.json(), time.monotonic() - started


def test_scopes_fail_fast_and_the_breaker_opens_while_the_server_is_down(
    cluster: Cluster, client: Client
) -> None:
    """Refused connects raise DatabaseUnavailableError in well under POOL_TIMEOUT; then the
    breaker opens, fails fast without connecting, and health is 503 without a ping."""
    write("before")
    assert checked_out() == 0
    cluster.stop()

    for _ in range(THRESHOLD):
        error, took = timed_failure(DatabaseUnavailableError)
        assert took < FAIL_FAST, f"a refused connect took {took:.3f} s"
        assert error.pool == "main"
        assert error.transient is True
        assert error.__cause__ is not None
        assert checked_out() == 0
    breaker = get_circuit_breaker("main")
    assert breaker.state == "open"

    error, took = timed_failure(CircuitOpenError)
    assert took < 0.1
    assert "failing fast without connecting" in str(error)

    status, body, took = health(client)
    assert status == 503
    assert body["status"] == "unhealthy"
    assert body["connection_pools"]["main"]["status"] == "unhealthy"
    assert body["connection_pools"]["main"]["detail"] == "circuit breaker open"
    assert body["connection_pools"]["other"]["detail"].startswith("unreachable")
    assert took < FAIL_FAST
    assert checked_out() == 0
    assert state.sessions.active_sessions == 0


def test_after_restart_one_half_open_trial_closes_the_breaker(
    cluster: Cluster, client: Client
) -> None:
    """Back up, the first scope past RECOVERY_TIMEOUT is the trial: it connects, closes the
    breaker, and its write and the one before the outage are there exactly once."""
    write("before")
    cluster.stop()
    for _ in range(THRESHOLD):
        timed_failure(DatabaseUnavailableError)
    breaker = get_circuit_breaker("main")
    assert breaker.state == "open"
    cluster.start()
    restarted = time.monotonic()

    # Until the recovery timeout has passed, the breaker still fails fast.
    if breaker.retry_in() > 0.2:
        timed_failure(CircuitOpenError)
    poll(lambda: breaker.state == "half_open", RECOVERY + 1.0, "the breaker never went half-open")
    write("after")  # the trial
    recovered = time.monotonic() - restarted
    assert breaker.state == "closed"
    assert breaker.failures == 0
    assert recovered < RECOVERY + 1.0

    assert titles() == ["after", "before"]
    status, body, _ = health(client)
    assert status == 200, body
    assert body["connection_pools"]["main"]["circuit_state"] == "closed"
    assert checked_out() == 0
    assert state.sessions.active_sessions == 0


def test_a_failed_trial_opens_the_breaker_again(cluster: Cluster) -> None:
    """Still down at the end of RECOVERY_TIMEOUT: the trial is refused and the breaker reopens
    for another full timeout; no connection slot is kept by the failed trial."""
    write("before")
    cluster.stop()
    for _ in range(THRESHOLD):
        timed_failure(DatabaseUnavailableError)
    breaker = get_circuit_breaker("main")
    poll(lambda: breaker.state == "half_open", RECOVERY + 1.0, "the breaker never went half-open")

    _, took = timed_failure(DatabaseUnavailableError)  # the trial, refused
    assert took < FAIL_FAST
    assert breaker.state == "open"
    assert breaker.retry_in() > RECOVERY - 0.5
    timed_failure(CircuitOpenError)
    assert checked_out() == 0

    cluster.start()
    poll(lambda: breaker.state == "half_open", RECOVERY + 1.0, "the breaker never went half-open")
    write("after")
    assert breaker.state == "closed"
    assert titles() == ["after", "before"]
    assert checked_out() == 0
