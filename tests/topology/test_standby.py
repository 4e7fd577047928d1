"""R18: a standby where the primary was (a failover), on a streaming standby of the test's own.

A write pool whose server turned out to be a hot standby gets SQLSTATE 25006
("cannot execute INSERT in a read-only transaction"). That is the failover
still under way, not a bad statement: ``DatabaseUnavailableError``,
transient, retried, counted by the breaker, and the connection is discarded.
Once the standby is promoted, writes succeed without restarting anything.
A READ_ONLY pool's write on a standby stays the plain refusal it is.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy import exc as sa_exc

from mingus_sessions import (
    DatabaseUnavailableError,
    ReadOnlyTransactionError,
    execute_with_retry,
    get_circuit_breaker,
    get_engine,
    is_transient,
    session_scope,
)
from tests.helpers import poll
from tests.topology.conftest import Cluster, add_alias, configure


@pytest.fixture(scope="module")
def primary() -> Iterator[Cluster]:
    cluster = Cluster.start("primary")
    try:
        cluster.sql("CREATE TABLE notes (id serial PRIMARY KEY, title text NOT NULL)")
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def standby(primary: Cluster) -> Iterator[Cluster]:
    """A fresh streaming standby of ``primary`` for each test (a test may promote it)."""
    cluster = primary.standby("standby")
    try:
        poll(lambda: cluster.sql("SELECT pg_is_in_recovery()") == [(True,)], 30, "standby up")
        yield cluster
    finally:
        cluster.destroy()


def on_server(
    monkeypatch: pytest.MonkeyPatch,
    settings: Any,
    server: Cluster,
    *,
    threshold: int = 10,
    recovery: float = 60.0,
    **pool: Any,
) -> None:
    """Pool "writes" on ``server``, with the breaker's threshold and recovery time given."""
    add_alias(monkeypatch, "failover", server.host, server.port)
    configure(
        settings,
        {"writes": {"DATABASE": "failover", **pool}},
        breaker={"FAILURE_THRESHOLD": threshold, "RECOVERY_TIMEOUT": recovery},
        retry={"BASE_DELAY": 0.05, "MAX_DELAY": 0.5, "JITTER": False},
    )


def write(title: str) -> None:
    with session_scope("writes") as session:
        session.execute(text("INSERT INTO notes (title) VALUES (:t)"), {"t": title})


def connections_opened() -> list[Any]:
    """Every DB-API connection pool "writes" opens from now on, in order."""
    opened: list[Any] = []
    event.listen(get_engine("writes"), "connect", lambda dbapi, record: opened.append(dbapi))
    return opened


def test_a_write_on_a_standby_is_transient_and_discards_the_connection(
    monkeypatch: pytest.MonkeyPatch, settings: Any, standby: Cluster
) -> None:
    """A write pool's write on a hot standby raises DatabaseUnavailableError (transient, SQLSTATE
    25006 as its cause), closes the connection, is retried and counted by the breaker, which
    opens; after promotion and the recovery time, the next write commits."""
    on_server(monkeypatch, settings, standby, threshold=4, recovery=1.0)
    opened = connections_opened()
    breaker = get_circuit_breaker("writes")

    with pytest.raises(DatabaseUnavailableError) as info:
        write("on the standby")
    error = info.value
    assert error.transient is True
    assert error.pool == "writes"
    cause = error.__cause__
    assert isinstance(cause, sa_exc.DBAPIError)
    assert getattr(cause.orig, "sqlstate", None) == "25006"
    assert "read-only transaction" in str(error)
    assert len(opened) == 1
    assert opened[0].closed, "the standby's connection went back to the pool"
    assert get_engine("writes").pool.checkedout() == 0
    assert breaker.failures == 1

    attempts: list[int] = []

    def attempt() -> None:
        attempts.append(len(attempts) + 1)
        write("retried on the standby")

    with pytest.raises(DatabaseUnavailableError):
        execute_with_retry(attempt, pool="writes", max_retries=2)
    assert attempts == [1, 2, 3]
    assert len(opened) == 4, "each retry opens a new connection"
    assert all(conn.closed for conn in opened)
    assert breaker.state == "open"  # 4 failures: the threshold

    standby.promote()
    poll(lambda: breaker.state == "half_open", 5, "breaker half-open")
    write("after promotion")
    assert breaker.state == "closed"
    assert standby.sql("SELECT title FROM notes WHERE title = 'after promotion'") == [
        ("after promotion",)
    ]
    assert get_engine("writes").pool.checkedout() == 0


def test_retries_carry_a_write_across_the_promotion(
    monkeypatch: pytest.MonkeyPatch, settings: Any, standby: Cluster
) -> None:
    """execute_with_retry keeps retrying a write on the standby while it is promoted in the
    background, and the write commits exactly once on the promoted server."""
    on_server(monkeypatch, settings, standby, threshold=1000)
    refused = threading.Event()
    failures: list[BaseException] = []

    def attempt() -> None:
        try:
            write("across the promotion")
        except DatabaseUnavailableError as failure:
            failures.append(failure)
            refused.set()
            raise

    promoting = threading.Thread(target=lambda: (refused.wait(30), standby.promote()))
    promoting.start()
    try:
        execute_with_retry(attempt, pool="writes", max_retries=100)
    finally:
        promoting.join(60)
    assert failures, "the first attempts met the standby"
    assert all(is_transient(failure) for failure in failures)
    assert get_circuit_breaker("writes").failures == 0  # the success reset the count
    assert standby.sql("SELECT count(*) FROM notes WHERE title = 'across the promotion'") == [(1,)]


def test_a_read_only_pool_on_a_standby_reads_and_is_refused_writes(
    monkeypatch: pytest.MonkeyPatch, settings: Any, standby: Cluster
) -> None:
    """On a READ_ONLY pool a standby is where it belongs: reads work, and a write is the plain
    read-only refusal (not transient, not counted, the connection kept)."""
    on_server(monkeypatch, settings, standby, READ_ONLY=True)
    opened = connections_opened()
    with session_scope("writes") as session:
        assert session.execute(text("SELECT count(*) FROM notes")).scalar_one() >= 0
    with pytest.raises(ReadOnlyTransactionError) as info:
        write("read-only on the standby")
    assert getattr(info.value.__cause__.orig, "sqlstate", None) == "25006"  # type: ignore[union-attr]
    assert not isinstance(info.value, DatabaseUnavailableError)
    assert not is_transient(info.value)
    assert get_circuit_breaker("writes").failures == 0
    assert len(opened) == 1
    assert not opened[0].closed


def test_a_write_pool_discards_idle_connections_to_a_hot_standby(
    monkeypatch: pytest.MonkeyPatch, settings: Any, standby: Cluster
) -> None:
    """PRE_PING on a pool that is not READ_ONLY: a connection whose server reports
    in_hot_standby is discarded at checkout, for free (the server sends the report itself);
    after the promotion the pool settles on one connection again."""
    on_server(monkeypatch, settings, standby)
    opened = connections_opened()
    for _ in range(3):
        with session_scope("writes") as session:
            session.execute(text("SELECT count(*) FROM notes"))
    assert len(opened) == 3, "each checkout found its idle connection on a standby"
    assert all(conn.closed for conn in opened[:2])

    standby.promote()
    poll(lambda: standby.sql("SELECT pg_is_in_recovery()") == [(False,)], 30, "promoted")
    for number in range(4):
        write(f"after promotion {number}")
    # The idle connection opened before the promotion still carries the report of a
    # standby (a backend sends the change with its next result): it is replaced once.
    assert len(opened) <= 4
    assert not opened[-1].closed
    assert standby.sql("SELECT count(*) FROM notes WHERE title LIKE 'after promotion %'") == [(4,)]
