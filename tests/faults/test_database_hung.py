"""R4: the database hung, not dead (the owned cluster's processes get SIGSTOP).

A stopped postmaster still has its listening socket, so the kernel completes
TCP handshakes that nobody answers: without ``connect_timeout`` a connect
would wait forever. A stopped backend never answers its pooled connection
either, so the health check's ``SELECT 1`` hangs; the endpoint must answer
unhealthy by its own deadline anyway. The ``cluster`` fixture sends SIGCONT in
teardown whatever happens; each test also resumes in a ``finally``.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from django.test import Client
from sqlalchemy import text

from mingus_sessions import ConnectionTimeoutError, get_engine, session_scope
from mingus_sessions import views as endpoint_views
from mingus_sessions._core.state import state
from tests.faults.conftest import Cluster, checked_out, configure
from tests.helpers import wait_for_health_pings

pytestmark = [
    pytest.mark.postgresql,
    pytest.mark.django_db(transaction=True, databases=["default", "other"]),
]

#: libpq's smallest useful connect_timeout is 2 s.
CONNECT_TIMEOUT = 2
HEALTH_DEADLINE = 1.0


@pytest.fixture(autouse=True)
def _settings(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    connect = {"CONNECT_ARGS": {"connect_timeout": CONNECT_TIMEOUT}}
    configure(settings, main={**connect, "POOL_TIMEOUT": 30}, other=connect)
    monkeypatch.setattr(endpoint_views, "HEALTH_TIMEOUT", HEALTH_DEADLINE)


def backend_pid() -> int:
    with session_scope() as s:
        return int(s.execute(text("SELECT pg_backend_pid()")).scalar_one())


def test_new_connections_fail_within_connect_timeout(cluster: Cluster) -> None:
    """With the postmaster stopped, a scope that needs a new connection raises
    ConnectionTimeoutError after connect_timeout (not POOL_TIMEOUT, not never); a pooled
    connection whose backend still runs keeps working meanwhile."""
    pooled = backend_pid()
    with session_scope() as s:
        s.execute(text("SELECT 1"))
        cluster.pause(backends=False)
        try:
            started = time.monotonic()
            with (
                pytest.raises(ConnectionTimeoutError) as info,
                session_scope(independent=True) as second,
            ):
                second.execute(text("SELECT 1"))
            took = time.monotonic() - started
            assert pooled == int(s.execute(text("SELECT pg_backend_pid()")).scalar_one())
        finally:
            cluster.resume()
    assert CONNECT_TIMEOUT - 0.1 <= took < CONNECT_TIMEOUT + 1.0, took
    assert info.value.pool == "main"
    assert info.value.transient is True
    assert checked_out() == 0
    assert backend_pid() == pooled
    assert state.sessions.active_sessions == 0


def test_health_answers_within_its_deadline_while_the_server_hangs(
    cluster: Cluster, client: Client
) -> None:
    """Postmaster and backends stopped: /health/database says 503 after its deadline (its
    ping is stuck on a pooled backend), then 200 once the server runs again."""
    backend_pid()
    assert get_engine().pool.checkedin() >= 1  # type: ignore[attr-defined]
    cluster.pause(backends=True)
    try:
        started = time.monotonic()
        response = client.get("/health/database")
        took = time.monotonic() - started
        again = client.get("/health/database")  # the stuck ping is not started twice
        took_again = time.monotonic() - started - took
    finally:
        cluster.resume()
    assert HEALTH_DEADLINE <= took < HEALTH_DEADLINE + 1.0, took
    assert response.status_code == 503
    assert response.json()["connection_pools"]["main"] == {"status": "unhealthy"}
    assert again.status_code == 503
    assert took_again < HEALTH_DEADLINE + 1.0

    wait_for_health_pings()
    assert client.get("/health/database").status_code == 200
    backend_pid()
    assert checked_out() == 0
    assert checked_out("other") == 0
