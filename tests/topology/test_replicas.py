"""Read replicas on servers of the test's own: a primary and two streaming standbys.

Routing (``session_scope(pool, read_only=True)``), read-your-writes with replay
paused on the standbys (``pg_wal_replay_pause()``), a replica past
``MAX_REPLICA_LAG`` or stopped and restarted, and reads while the primary is
down. Each test says which server served a read by its port
(``inet_server_port()``).
"""

from __future__ import annotations

import asyncio
import collections
import io
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from sqlalchemy import event, text

from mingus_sessions import (
    DatabaseConnectionError,
    DatabaseUnavailableError,
    ReadOnlyTransactionError,
    asession_scope,
    execute_with_retry,
    get_circuit_breaker,
    get_engine,
    is_transient,
    last_commit_token,
    session_scope,
)
from mingus_sessions._core.state import state
from mingus_sessions.metrics import check_all_pools, get_pool_metrics
from mingus_sessions.metrics.api import overall_status
from mingus_sessions.metrics.prometheus import render_prometheus
from mingus_sessions.replicas import get_replica_statuses
from tests.helpers import poll
from tests.topology.conftest import Cluster, add_alias, configure

REPLICAS = ("replica1", "replica2")
APP_POOLS = ["app", *(f"app@{alias}" for alias in REPLICAS)]
TRIES = 1000


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, Cluster]]:
    primary = Cluster.start("primary")
    started = {"primary": primary}
    try:
        primary.sql("CREATE TABLE notes (id serial PRIMARY KEY, title text NOT NULL)")
        for alias in REPLICAS:
            started[alias] = primary.standby(alias)
        for alias in REPLICAS:
            standby = started[alias]
            poll(lambda s=standby: s.sql("SELECT pg_is_in_recovery()") == [(True,)], 30, alias)
        yield started
    finally:
        for cluster in started.values():
            cluster.destroy()


@pytest.fixture
def app(
    monkeypatch: pytest.MonkeyPatch, settings: Any, servers: dict[str, Cluster]
) -> Iterator[Callable[..., None]]:
    """Configure pool "app" on the primary with both replicas; call it with pool keys to change."""

    def configure_app(**pool: Any) -> None:
        for alias, cluster in servers.items():
            add_alias(monkeypatch, alias, cluster.host, cluster.port)
        configure(
            settings,
            {
                "app": {
                    "DATABASE": "primary",
                    "REPLICAS": list(REPLICAS),
                    "MAX_REPLICA_LAG": 2,
                    **pool,
                }
            },
            breaker={"FAILURE_THRESHOLD": 3, "RECOVERY_TIMEOUT": 1.0},
            retry={"BASE_DELAY": 0.05, "MAX_DELAY": 0.5, "JITTER": False},
        )

    configure_app()
    yield configure_app
    for alias in REPLICAS:
        servers[alias].sql("SELECT pg_wal_replay_resume()")


def replicas_ready(servers: dict[str, Cluster], timeout: float = 15) -> None:
    """Wait until every replica replayed a new commit and the sampler found it caught up.

    (A standby that replayed no transaction since it started has no known lag.)
    """
    marker = f"ready {time.monotonic()}"
    write(marker)
    for alias in REPLICAS:
        poll(
            lambda a=alias: servers[a].sql("SELECT 1 FROM notes WHERE title = %s", (marker,)),
            timeout,
            f"{alias} replayed",
        )
    with session_scope("app", read_only=True):
        pass  # starts the sampler
    poll(
        lambda: (
            all(
                status.reachable and status.lag is not None and status.lag < 1
                for status in get_replica_statuses("app").values()
            )
            and len(get_replica_statuses("app")) == len(REPLICAS)
        ),
        timeout,
        "replicas sampled",
    )


def port_of_read(**kwargs: Any) -> int:
    with session_scope("app", read_only=True, **kwargs) as session:
        return int(session.execute(text("SELECT inet_server_port()")).scalar_one())


def write(title: str) -> None:
    with session_scope("app") as session:
        session.execute(text("INSERT INTO notes (title) VALUES (:t)"), {"t": title})


def read_title(title: str, **kwargs: Any) -> tuple[int, bool]:
    """(the port that served the read, whether it saw the note ``title``)."""
    with session_scope("app", read_only=True, **kwargs) as session:
        port, found = session.execute(
            text("SELECT inet_server_port(), EXISTS (SELECT 1 FROM notes WHERE title = :t)"),
            {"t": title},
        ).one()
    return int(port), bool(found)


def pause_replay(servers: dict[str, Cluster], *aliases: str) -> None:
    for alias in aliases:
        servers[alias].sql("SELECT pg_wal_replay_pause()")
        poll(
            lambda a=alias: (
                servers[a].sql("SELECT pg_get_wal_replay_pause_state()") == [("paused",)]
            ),
            10,
            f"{alias} paused",
        )


def resume_replay(servers: dict[str, Cluster], *aliases: str) -> None:
    for alias in aliases:
        servers[alias].sql("SELECT pg_wal_replay_resume()")


def test_reads_spread_evenly_over_the_replicas_and_writes_stay_on_the_primary(
    app: Callable[..., None], servers: dict[str, Cluster]
) -> None:
    replicas_ready(servers)
    served = collections.Counter(port_of_read() for _ in range(200))
    assert set(served) == {servers[alias].port for alias in REPLICAS}, served
    assert abs(served[servers["replica1"].port] - served[servers["replica2"].port]) <= 2
    with session_scope("app") as session:
        assert session.execute(text("SELECT inet_server_port()")).scalar_one() == (
            servers["primary"].port
        )
    # A write in a read-only scope is refused on a replica, and is no outage.
    with (
        pytest.raises(ReadOnlyTransactionError) as info,
        session_scope("app", read_only=True) as session,
    ):
        session.execute(text("INSERT INTO notes (title) VALUES ('refused')"))
    assert not is_transient(info.value)
    assert all(get_circuit_breaker(f"app@{alias}").failures == 0 for alias in REPLICAS)
    assert servers["primary"].sql("SELECT count(*) FROM notes WHERE title = 'refused'") == [(0,)]


def test_read_your_writes_while_replay_is_paused(
    app: Callable[..., None], servers: dict[str, Cluster]
) -> None:
    """With replay paused on both standbys (lag injected), each read right after a write
    sees it, 1,000 times out of 1,000; a context that did not write reads the replica
    (and misses the writes); given the writer's token, it sees them."""
    app(MAX_REPLICA_LAG=60)
    replicas_ready(servers)
    pause_replay(servers, *REPLICAS)
    try:
        time.sleep(2)  # two seconds of lag
        primary_port = servers["primary"].port
        stale = 0
        for n in range(TRIES):
            write(f"note {n}")
            port, found = read_title(f"note {n}")
            stale += not found
            assert port == primary_port
        assert stale == 0
        token = last_commit_token("app")
        assert token is not None

        elsewhere: dict[str, tuple[int, bool]] = {}

        def another_context() -> None:
            # A new thread: this context committed nothing.
            assert last_commit_token("app") is None
            elsewhere["untold"] = read_title(f"note {TRIES - 1}")
            elsewhere["told"] = read_title(f"note {TRIES - 1}", after=token)

        thread = threading.Thread(target=another_context)
        thread.start()
        thread.join(30)
        untold_port, untold_found = elsewhere["untold"]
        assert untold_port != primary_port, "a replica served the read"
        assert not untold_found, "the replicas lag behind"
        assert elsewhere["told"] == (primary_port, True)
    finally:
        resume_replay(servers, *REPLICAS)
    # Caught up, the replicas serve this context's reads again, with its writes.
    port, found = poll(
        lambda: (r := read_title(f"note {TRIES - 1}"))[0] != servers["primary"].port and r,
        10,
        "reads back on a replica",
    )
    assert found


def test_a_replica_past_max_replica_lag_is_skipped(
    app: Callable[..., None], servers: dict[str, Cluster]
) -> None:
    app(MAX_REPLICA_LAG=1)
    replicas_ready(servers)
    pause_replay(servers, "replica1")
    try:
        write("behind replica1")
        lagging = poll(
            lambda: (
                (status := get_replica_statuses("app")["app@replica1"]).lag is not None
                and status.lag > 1
                and status
            ),
            10,
            "replica1 past the lag allowed",
        )
        assert lagging.reachable
        served = {port_of_read() for _ in range(50)}
        assert served == {servers["replica2"].port}
        shown = get_pool_metrics("app@replica1")
        assert (shown.replica_of, shown.replica_state) == ("app", "lagging")
        assert shown.replica_lag is not None
        assert shown.replica_lag > 1
        health = check_all_pools(pools=APP_POOLS)
        assert health["app@replica1"]["status"] == "degraded"
        assert "replica lagging" in health["app@replica1"]["detail"]
        assert health["app@replica2"]["status"] == "healthy"
        assert overall_status(health) == "degraded"
    finally:
        resume_replay(servers, "replica1")
    poll(
        lambda: servers["replica1"].port in {port_of_read() for _ in range(10)},
        10,
        "replica1 serves again",
    )


@pytest.mark.django_db
def test_a_stopped_replica_is_skipped_without_an_error_and_comes_back(
    app: Callable[..., None], servers: dict[str, Cluster], admin_client: Client
) -> None:
    replicas_ready(servers)
    servers["replica1"].stop()
    try:
        # Before and after the sampler notices: every read succeeds, elsewhere.
        served = collections.Counter(port_of_read() for _ in range(100))
        assert servers["replica1"].port not in served
        poll(
            lambda: get_replica_statuses("app")["app@replica1"].reachable is False,
            10,
            "replica1 seen down",
        )
        assert get_replica_statuses("app")["app@replica1"].problem
        assert servers["replica1"].port not in {port_of_read() for _ in range(20)}
        assert_surfaces_show_replica1_down(admin_client)
    finally:
        servers["replica1"].restart()
    poll(
        lambda: servers["replica1"].port in {port_of_read() for _ in range(10)},
        20,
        "replica1 serves again",
    )
    assert get_engine("app").pool.checkedout() == 0


def assert_surfaces_show_replica1_down(admin_client: Client) -> None:
    """Metrics, health, Prometheus, pool_status and the admin show the replica and its state."""
    shown = get_pool_metrics("app@replica1")
    assert (shown.replica_of, shown.replica_state, shown.replica_lag) == (
        "app",
        "unreachable",
        None,
    )
    assert get_pool_metrics("app@replica2").replica_state == "serving"
    health = check_all_pools(pools=APP_POOLS)
    assert health["app@replica1"]["status"] == "degraded", "reads go on: never unhealthy"
    # Its breaker opened as reads found it down (3 failures), or its ping failed.
    assert health["app@replica1"]["detail"].startswith(
        ("replica unreachable", "replica circuit breaker open")
    )
    assert 'reads go to the primary, pool "app"' in health["app@replica1"]["detail"]
    assert overall_status(health) == "degraded"
    exposition = render_prometheus()
    assert re.search(
        r'mingus_sessions_replica_serving\{[^}]*pool="app@replica1",replica_of="app"\} 0',
        exposition,
    )
    assert re.search(
        r'mingus_sessions_replica_serving\{[^}]*pool="app@replica2",replica_of="app"\} 1',
        exposition,
    )
    assert re.search(r'mingus_sessions_replica_lag_seconds\{[^}]*pool="app@replica2"', exposition)
    out = io.StringIO()
    call_command("pool_status", "--local", stdout=out)
    assert "app@replica1 of app: unreachable, lag unknown" in out.getvalue()
    assert "app@replica2 of app: serving, lag " in out.getvalue()
    page = admin_client.get(reverse("admin:mingus_sessions_connectionpool_changelist"))
    assert page.status_code == 200
    assert "app: unreachable" in page.content.decode()


def test_a_forked_child_samples_the_replicas_itself(
    app: Callable[..., None], servers: dict[str, Cluster]
) -> None:
    """A fork leaves the child no sampler thread: its first read starts one."""
    replicas_ready(servers)
    parents = state.replica_sampler
    assert parents is not None
    state.after_fork_in_child()  # what the child's registry looks like
    try:
        assert state.replica_sampler is None
        assert port_of_read() in {servers[alias].port for alias in REPLICAS}
        assert state.replica_sampler is not None
        assert state.replica_sampler is not parents
    finally:
        parents.halt()


def test_async_reads_are_routed_and_read_their_writes(
    app: Callable[..., None], servers: dict[str, Cluster]
) -> None:
    app(MAX_REPLICA_LAG=60)
    replicas_ready(servers)

    async def port(session: Any) -> int:
        return int((await session.execute(text("SELECT inet_server_port()"))).scalar_one())

    async def scenario() -> tuple[set[int], int, bool]:
        ports = set()
        for _ in range(20):
            async with asession_scope("app", read_only=True) as session:
                ports.add(await port(session))
        pause_replay(servers, *REPLICAS)
        async with asession_scope("app") as session:
            await session.execute(text("INSERT INTO notes (title) VALUES ('async')"))
        async with asession_scope("app", read_only=True) as session:
            found = await session.scalar(
                text("SELECT EXISTS (SELECT 1 FROM notes WHERE title = 'async')")
            )
            return ports, await port(session), bool(found)

    try:
        ports, port_after_write, found = asyncio.run(scenario())
    finally:
        resume_replay(servers, *REPLICAS)
    assert ports == {servers[alias].port for alias in REPLICAS}
    assert (port_after_write, found) == (servers["primary"].port, True)


def test_reads_go_on_from_the_replicas_while_the_primary_is_down(
    app: Callable[..., None], servers: dict[str, Cluster]
) -> None:
    """Replicas keep serving reads while the primary is away; writes fail transiently."""
    replicas_ready(servers)
    write("before the outage")
    servers["primary"].stop()
    try:
        with pytest.raises(DatabaseUnavailableError) as info:
            write("during the outage")
        assert info.value.transient
        poll(lambda: read_title("before the outage")[1], 10, "the last write replayed")
        served = collections.Counter(read_title("before the outage") for _ in range(50))
        assert all(found for _port, found in served)
        assert {port for port, _found in served} <= {servers[a].port for a in REPLICAS}
    finally:
        servers["primary"].restart()
    poll(lambda: _writes(), 20, "the primary writes again")


def _writes() -> bool:
    try:
        write("after the outage")
    except DatabaseConnectionError:  # unavailable, or the breaker open meanwhile
        return False
    return True


def test_a_failover_under_way_fails_writes_transiently_while_a_replica_serves_reads(
    monkeypatch: pytest.MonkeyPatch,
    settings: Any,
    app: Callable[..., None],
    servers: dict[str, Cluster],
) -> None:
    """The pool's primary address reaches a standby (a failover under way): each write is a
    transient DatabaseUnavailableError and its connection is discarded, reads go on from the
    replica; once the standby is promoted, a retried write commits there."""
    standby = servers["primary"].standby("failover")
    try:
        poll(lambda: standby.sql("SELECT pg_is_in_recovery()") == [(True,)], 30, "standby up")
        add_alias(monkeypatch, "primary", standby.host, standby.port)
        configure(
            settings,
            {"app": {"DATABASE": "primary", "REPLICAS": ["replica1"], "MAX_REPLICA_LAG": 2}},
            breaker={"FAILURE_THRESHOLD": 100},
            retry={"BASE_DELAY": 0.05, "MAX_DELAY": 0.5, "JITTER": False},
        )
        opened: list[Any] = []
        event.listen(get_engine("app"), "connect", lambda dbapi, record: opened.append(dbapi))
        with pytest.raises(DatabaseUnavailableError) as info:
            write("during the failover")
        assert info.value.transient
        assert [conn.closed for conn in opened] == [True], "the standby's connection discarded"
        poll(lambda: port_of_read() == servers["replica1"].port, 10, "a read on the replica")
        assert {port_of_read() for _ in range(20)} == {servers["replica1"].port}

        standby.promote()
        execute_with_retry(lambda: write("after promotion"), pool="app", max_retries=10)
        assert standby.sql("SELECT count(*) FROM notes WHERE title = 'after promotion'") == [(1,)]
    finally:
        standby.destroy()
