"""R16: a silent network partition, on a cluster inside a network namespace of the test's own.

iptables in the namespace drops every packet both ways: no FIN, no RST, the
server simply stops answering. Without ``SOCKET_TIMEOUT`` a statement in
flight waits for the kernel's two-hour keepalive and a pre-ping for its
quarter of an hour of retransmissions. With it, a statement in flight, a
checkout (pre-ping, then a new connection) and a connect each fail within
``SOCKET_TIMEOUT``; the breaker opens, health says unhealthy within its own
deadline, and once the network heals the pool serves again with every slot.
A long statement on a healthy network is never cut.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text

from mingus_sessions import (
    ConnectionTimeoutError,
    DatabaseUnavailableError,
    get_circuit_breaker,
    get_engine,
    session_scope,
)
from mingus_sessions.metrics.api import check_pool
from tests.helpers import wait_for_health_pings
from tests.topology.conftest import Cluster, Network, add_alias, configure

POOL_SIZE = 2
THRESHOLD = 4
RECOVERY = 1.0
HEALTH_DEADLINE = 1.0
#: Transient connection failures, both counted by the breaker.
CONNECT_FAILURES = (ConnectionTimeoutError, DatabaseUnavailableError)


@pytest.fixture
def remote(
    monkeypatch: pytest.MonkeyPatch, settings: Any, partitioned: tuple[Network, Cluster]
) -> Iterator[Network]:
    """Pool "remote" on the namespace's cluster; the network is healed again afterwards."""
    network, cluster = partitioned
    add_alias(monkeypatch, "remote", cluster.host, cluster.port)
    try:
        yield network
    finally:
        if network.is_cut:
            network.heal()
        wait_for_health_pings()


def use(settings: Any, socket_timeout: float | None) -> None:
    configure(
        settings,
        {
            "remote": {
                "DATABASE": "remote",
                "POOL_SIZE": POOL_SIZE,
                "MAX_OVERFLOW": 0,
                "POOL_TIMEOUT": 3,
                "SOCKET_TIMEOUT": socket_timeout,
            }
        },
        breaker={"FAILURE_THRESHOLD": THRESHOLD, "RECOVERY_TIMEOUT": RECOVERY},
    )


def query(sql: str) -> Any:
    with session_scope("remote") as session:
        return session.execute(text(sql)).scalar()


def timed(sql: str) -> tuple[BaseException | None, float]:
    """Run ``sql`` in a scope of pool "remote"; the failure (if any) and how long it took."""
    started = time.monotonic()
    try:
        query(sql)
    except Exception as failure:
        return failure, time.monotonic() - started
    return None, time.monotonic() - started


def fill_the_pool() -> None:
    """Open POOL_SIZE connections at once, so that each is in the pool afterwards."""
    barrier = threading.Barrier(POOL_SIZE)

    def hold() -> None:
        with session_scope("remote") as session:
            session.execute(text("SELECT 1"))
            barrier.wait(10)

    threads = [threading.Thread(target=hold) for _ in range(POOL_SIZE)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert get_engine("remote").pool.checkedin() == POOL_SIZE


@pytest.mark.parametrize("socket_timeout", [5, 30])
def test_a_partition_costs_each_call_at_most_socket_timeout(
    remote: Network, settings: Any, socket_timeout: int
) -> None:
    """During a silent partition a statement in flight fails with DatabaseUnavailableError, a
    checkout of a pooled connection and a new connect with a transient connection error, each
    within SOCKET_TIMEOUT; health is unhealthy within its deadline before and after the breaker
    opens; after the heal the pool serves again with all its slots and nothing checked out."""
    use(settings, socket_timeout)
    breaker = get_circuit_breaker("remote")
    fill_the_pool()

    in_flight: list[tuple[BaseException | None, float]] = []

    def long_statement() -> None:
        failure, _ = timed("SELECT pg_sleep(600)")
        in_flight.append((failure, time.monotonic()))

    statement = threading.Thread(target=long_statement)
    statement.start()
    time.sleep(0.5)  # the statement is on the server, its answer pending
    remote.cut()
    cut_at = time.monotonic()

    checkout_error, checkout_took = timed("SELECT 1")  # the other pooled connection
    statement.join(socket_timeout + 10)
    assert not statement.is_alive(), "the statement in flight still hangs"
    [(flight_error, flight_ended)] = in_flight
    flight_took = flight_ended - cut_at
    connect_error, connect_took = timed("SELECT 1")  # the pool is empty: a new connection

    print(
        f"\nSOCKET_TIMEOUT {socket_timeout}: statement in flight {flight_took:.1f} s "
        f"({type(flight_error).__name__}), checkout {checkout_took:.1f} s "
        f"({type(checkout_error).__name__}), connect {connect_took:.1f} s "
        f"({type(connect_error).__name__})"
    )
    assert isinstance(flight_error, DatabaseUnavailableError), repr(flight_error)
    # A connect ends at whichever comes first: connect_timeout ("timeout expired":
    # ConnectionTimeoutError) or, below it, the TCP user timeout on the unanswered
    # SYN (libpq: "server closed the connection": DatabaseUnavailableError).
    assert isinstance(checkout_error, CONNECT_FAILURES), repr(checkout_error)
    assert isinstance(connect_error, CONNECT_FAILURES), repr(connect_error)
    for took in (flight_took, checkout_took, connect_took):
        assert took < socket_timeout
    assert (breaker.state, breaker.failures) == ("closed", 3)

    # The breaker still closed, the health check's ping meets the partition: it answers
    # within its own deadline all the same.
    health, took = timed_health()
    assert (health["status"], health["detail"]) == (
        "unhealthy",
        "unreachable: timed out (no answer within 1 s)",
    )
    assert took < HEALTH_DEADLINE + 0.5

    fourth, took = timed("SELECT 1")
    assert isinstance(fourth, CONNECT_FAILURES)
    assert took < socket_timeout
    assert breaker.state == "open"
    health, took = timed_health()
    assert health["status"] == "unhealthy"
    assert took < HEALTH_DEADLINE + 0.5
    wait_for_health_pings()
    assert get_engine("remote").pool.checkedout() == 0

    remote.heal()
    time.sleep(RECOVERY)
    assert query("SELECT 1") == 1  # the half-open trial
    assert breaker.state == "closed"
    fill_the_pool()  # every slot is back
    assert get_engine("remote").pool.checkedout() == 0
    assert check_pool("remote", timeout=5)["status"] == "healthy"


def timed_health() -> tuple[dict[str, Any], float]:
    started = time.monotonic()
    health = check_pool("remote", timeout=HEALTH_DEADLINE)
    return health, time.monotonic() - started


def test_a_long_statement_on_a_healthy_network_is_not_cut(remote: Network, settings: Any) -> None:
    """Keepalive probes are answered by a healthy server's kernel: a statement running longer
    than SOCKET_TIMEOUT completes."""
    use(settings, 5)
    started = time.monotonic()
    assert query("SELECT pg_sleep(8)::text || 'done'") == "done"
    assert time.monotonic() - started >= 8
    assert get_circuit_breaker("remote").failures == 0
