"""The pools' health: healthy, degraded and unhealthy, each within its deadline."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event

from mingus_sessions import get_circuit_breaker, get_engine
from mingus_sessions._core.state import state
from mingus_sessions.metrics import check_all_pools, get_pool_metrics
from mingus_sessions.metrics.api import check_pool, overall_status
from tests.helpers import Holder, add_postgresql_alias, closed_port
from tests.surfaces.helpers import configure, db

#: No sampler reads or publishes these pools while a test runs (tests/surfaces/conftest.py).
pytestmark = pytest.mark.usefixtures("no_sampler")


@db
def test_check_all_pools_healthy() -> None:
    """Working pools are healthy; each result has status, detail, utilization, breaker."""
    results = check_all_pools()
    assert set(results) == {"main", "other"}
    for result in results.values():
        assert result == {
            "status": "healthy",
            "detail": "ok",
            "utilization": 0.0,
            "circuit_state": "closed",
        }
    assert overall_status(results) == "healthy"
    assert check_pool("other")["status"] == "healthy"
    assert check_pool()["status"] == "healthy"  # the default pool


@db
def test_open_breaker_is_unhealthy_without_connecting() -> None:
    """An open breaker: "unhealthy" at once, and no connection is attempted."""
    attempts: list[int] = []
    event.listen(get_engine("main"), "do_connect", lambda *args: attempts.append(1))
    breaker = get_circuit_breaker("main")
    for _ in range(5):  # the suite's FAILURE_THRESHOLD
        breaker.record_failure()
    assert breaker.state == "open"
    started = time.monotonic()
    results = check_all_pools()
    assert time.monotonic() - started < 1.0
    assert results["main"]["status"] == "unhealthy"
    assert results["main"]["circuit_state"] == "open"
    assert "breaker" in results["main"]["detail"]
    assert attempts == []
    assert results["other"]["status"] == "healthy"
    assert overall_status(results) == "unhealthy"
    assert get_pool_metrics("main").circuit_state == "open"


@db
def test_exhausted_pool_is_degraded_fast(settings: Any) -> None:
    """Every connection checked out: "degraded" at once, not after the pool's timeout."""
    configure(
        settings,
        {"tiny": {"DATABASE": "default", "POOL_SIZE": 1, "MAX_OVERFLOW": 1, "POOL_TIMEOUT": 10}},
    )
    holders = [Holder("tiny"), Holder("tiny")]
    try:
        started = time.monotonic()
        results = check_all_pools()
        assert time.monotonic() - started < 2.0  # the pool's timeout is 10 s
        assert results["tiny"]["status"] == "degraded"
        assert results["tiny"]["utilization"] == 1.0
        assert results["main"]["status"] == "healthy"
        assert overall_status(results) == "degraded"
        assert get_pool_metrics("tiny").timeouts == 0  # the check never queued
    finally:
        for holder in holders:
            holder.stop()
    assert check_all_pools(pools=["tiny"])["tiny"]["status"] == "healthy"


@db
def test_nearly_saturated_pool_is_degraded(settings: Any) -> None:
    """Utilization at or above 0.9 (but a connection left to ping with) is "degraded"."""
    configure(
        settings,
        {"wide": {"DATABASE": "default", "POOL_SIZE": 10, "MAX_OVERFLOW": 0, "POOL_TIMEOUT": 10}},
    )
    holders = [Holder("wide") for _ in range(9)]
    try:
        result = check_pool("wide")
        assert result["status"] == "degraded"
        assert result["utilization"] == 0.9
    finally:
        for holder in holders:
            holder.stop()


@db
def test_dead_database_is_unhealthy_fast(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A database nobody listens for: "unhealthy" within the deadline, no secret shown."""
    add_postgresql_alias(monkeypatch, "dead", closed_port(), {"connect_timeout": 5})
    configure(
        settings,
        {"dead": {"DATABASE": "dead", "POOL_SIZE": 1, "MAX_OVERFLOW": 0, "POOL_TIMEOUT": 10}},
    )
    started = time.monotonic()
    results = check_all_pools(timeout=5)
    assert time.monotonic() - started < 3.0
    assert results["dead"]["status"] == "unhealthy"
    assert results["dead"]["detail"].startswith("unreachable")
    assert results["main"]["status"] == "healthy"
    assert overall_status(results) == "unhealthy"
    assert "s3cret" not in json.dumps(results)
    assert get_pool_metrics("dead").connect_errors == 1


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog) but never answers."""

    silent = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        yield int(silent.getsockname()[1])
    finally:
        silent.close()  # the hanging ping fails now; let it finish within this test
        ping = state.health_pings.get("silent")
        if ping is not None:
            assert ping.done.wait(10)
            ping.thread.join(10)


@db
def test_silent_database_is_unhealthy_at_the_deadline(
    settings: Any, monkeypatch: pytest.MonkeyPatch, silent_port: int
) -> None:
    """A server that accepts but never answers: "unhealthy" when the deadline passes."""
    add_postgresql_alias(monkeypatch, "silent", silent_port, {"connect_timeout": 5})
    configure(settings, {"silent": {"DATABASE": "silent", "POOL_SIZE": 3, "MAX_OVERFLOW": 0}})
    started = time.monotonic()
    result = check_pool("silent", timeout=0.3)
    assert time.monotonic() - started < 1.5
    assert result["status"] == "unhealthy"
    assert result["detail"] == "unreachable: timed out (no answer within 0.3 s)"
    # A second check while the first ping still hangs does not start another one.
    started = time.monotonic()
    again = check_pool("silent", timeout=0.3)
    assert time.monotonic() - started < 0.3
    assert again["status"] == "unhealthy"
    assert "not answered" in again["detail"]


@db
def test_silent_database_stays_unhealthy_on_a_pool_of_one(
    settings: Any, monkeypatch: pytest.MonkeyPatch, silent_port: int
) -> None:
    """The second check of a silent database is still "unhealthy", whatever the pool size."""
    add_postgresql_alias(monkeypatch, "silent", silent_port, {"connect_timeout": 5})
    configure(settings, {"silent": {"DATABASE": "silent", "POOL_SIZE": 1, "MAX_OVERFLOW": 0}})
    assert check_pool("silent", timeout=0.3)["status"] == "unhealthy"
    assert check_pool("silent", timeout=0.3)["status"] == "unhealthy"


def test_overall_status_is_the_worst() -> None:
    """overall_status: unhealthy > degraded > healthy; nothing at all is healthy."""
    healthy, degraded, unhealthy = (
        {"status": "healthy"},
        {"status": "degraded"},
        {"status": "unhealthy"},
    )
    assert overall_status({}) == "healthy"
    assert overall_status({"a": healthy, "b": healthy}) == "healthy"
    assert overall_status({"a": healthy, "b": degraded}) == "degraded"
    assert overall_status({"a": unhealthy, "b": degraded, "c": healthy}) == "unhealthy"
