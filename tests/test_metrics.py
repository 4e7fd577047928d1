"""Pool metrics: shapes, gauges against the pool's own accessors, exact counters, sessions.

Runs on every backend of the suite (``MINGUS_TEST_DATABASE``). Each test gets
fresh engines (the suite's plugin disposes them), so every recorder starts at
zero.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings as django_settings
from sqlalchemy import event, text

from mingus_sessions import (
    PoolExhaustedError,
    execute_with_retry,
    get_circuit_breaker,
    get_engine,
    session_scope,
)
from mingus_sessions._core.histogram import Histogram
from mingus_sessions._core.recorder import PoolRecorder
from mingus_sessions._core.state import state
from mingus_sessions.engines import get_entry
from mingus_sessions.errors import DatabaseUnavailableError
from mingus_sessions.metrics import (
    Percentiles,
    PoolMetrics,
    check_all_pools,
    get_performance_metrics,
    get_pool_metrics,
    get_session_stats,
    get_transaction_stats,
    reset_metrics,
    stop_monitoring,
)
from mingus_sessions.metrics.api import check_pool, overall_status
from tests.helpers import Holder, add_postgresql_alias, closed_port

BACKEND = os.environ.get("MINGUS_TEST_DATABASE", "sqlite")
EXPECTED_BACKEND = {
    "sqlite": "sqlite+pysqlite",
    "postgresql": "postgresql+psycopg",
    "mysql": "mysql+mysqldb",
}[BACKEND]

db = pytest.mark.django_db(transaction=True, databases=["default", "other"])

#: The fields docs and dashboards rely on (DESIGN.md, "Exact shapes").
POOL_METRICS_FIELDS = {
    "name",
    "database",
    "backend",
    "pool_class",
    "pool_size",
    "max_overflow",
    "timeout",
    "recycle",
    "checked_out",
    "checked_in",
    "overflow",
    "waiting",
    "total",
    "capacity",
    "utilization",
    "connects",
    "connect_errors",
    "checkouts",
    "timeouts",
    "invalidations",
    "leaks",
    "slow_queries",
    "acquire_wait_ms",
    "hold_ms",
    "connect_ms",
    "circuit_state",
    "since",
}
COUNTERS = (
    "connects",
    "connect_errors",
    "checkouts",
    "timeouts",
    "invalidations",
    "leaks",
    "slow_queries",
)
SESSION_KEYS = {
    "total_sessions",
    "active_sessions",
    "committed_transactions",
    "transaction_rollbacks",
    "failed_sessions",
    "savepoints",
    "retries",
}

BUG = ("metrics bug",)


class Boom(Exception):
    """A non-database failure raised inside scopes."""


@pytest.fixture(autouse=True)
def _no_sampler() -> Iterator[None]:
    # A sampler left running (an earlier request through the middleware starts
    # one) would read and publish these pools concurrently.
    stop_monitoring()
    yield
    stop_monitoring()


def configure(settings: Any, pools: dict[str, Any] | None = None, **top: Any) -> dict[str, Any]:
    """The suite's MINGUS_SESSIONS plus ``pools`` and top-level keys ``top``."""
    config = copy.deepcopy(django_settings.MINGUS_SESSIONS)
    config["POOLS"].update(pools or {})
    config.update(top)
    settings.MINGUS_SESSIONS = config
    return config


def select_one(pool: str | None = None) -> None:
    with session_scope(pool) as session:
        session.execute(text("SELECT 1"))


def assert_ordered(found: Percentiles) -> None:
    assert 0 <= found.p50 <= found.p95 <= found.p99 <= found.max


def assert_gauges_match_pool(name: str) -> PoolMetrics:
    """The snapshot's gauges are the queue pool's own accessors (at quiescence)."""
    pool = get_engine(name).pool
    metrics = get_pool_metrics(name)
    assert metrics.checked_out == pool.checkedout()  # type: ignore[attr-defined]
    assert metrics.checked_in == pool.checkedin()  # type: ignore[attr-defined]
    assert metrics.overflow == max(pool.overflow(), 0)  # type: ignore[attr-defined]
    assert metrics.total == metrics.checked_in + metrics.checked_out
    assert metrics.waiting == 0
    return metrics


class Events:
    """Independent counts of the pool events of one engine (the truth the recorder must match)."""

    def __init__(self, name: str) -> None:
        self.lock = threading.Lock()
        self.connects = 0
        self.checkouts = 0
        self.invalidations = 0
        self.closes_after_invalidation = 0
        self.other_closes = 0
        self._invalidated: set[int] = set()
        engine = get_engine(name)
        event.listen(engine, "connect", self._connect)
        event.listen(engine, "checkout", self._checkout)
        event.listen(engine, "invalidate", self._invalidate)
        event.listen(engine, "close", self._close)

    def _connect(self, dbapi_connection: Any, record: Any) -> None:
        with self.lock:
            self.connects += 1

    def _checkout(self, dbapi_connection: Any, record: Any, proxy: Any) -> None:
        with self.lock:
            self.checkouts += 1

    def _invalidate(self, dbapi_connection: Any, record: Any, exception: Any) -> None:
        with self.lock:
            self.invalidations += 1
            self._invalidated.add(id(dbapi_connection))

    def _close(self, dbapi_connection: Any, record: Any) -> None:
        with self.lock:
            if id(dbapi_connection) in self._invalidated:
                self._invalidated.discard(id(dbapi_connection))
                self.closes_after_invalidation += 1
            else:
                self.other_closes += 1


def wait_until(predicate: Any, timeout: float = 5.0, interval: float = 0.005) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


# -- shape and configuration -------------------------------------------------------------------


@db
def test_get_pool_metrics_lists_every_configured_pool() -> None:
    """get_pool_metrics() maps every configured pool name to its PoolMetrics."""
    found = get_pool_metrics()
    assert isinstance(found, dict)
    assert list(found) == ["main", "other"]
    for name, metrics in found.items():
        assert isinstance(metrics, PoolMetrics)
        assert metrics.name == name


@db
def test_pool_metrics_is_a_frozen_dataclass_with_the_documented_fields() -> None:
    """One pool's PoolMetrics: frozen, every documented field, as_dict() JSON-serializable."""
    metrics = get_pool_metrics("main")
    assert isinstance(metrics, PoolMetrics)
    assert dataclasses.is_dataclass(metrics)
    names = {f.name for f in dataclasses.fields(metrics)}
    assert names >= POOL_METRICS_FIELDS
    with pytest.raises(dataclasses.FrozenInstanceError):
        metrics.checked_out = 3  # type: ignore[misc]

    as_dict = metrics.as_dict()
    assert set(as_dict) == names
    assert json.loads(json.dumps(as_dict)) == as_dict
    for key in ("acquire_wait_ms", "hold_ms", "connect_ms"):
        assert isinstance(getattr(metrics, key), Percentiles)
        assert set(as_dict[key]) == {"p50", "p95", "p99", "max", "count"}
    # since: when the counters were last reset, an ISO 8601 timestamp
    assert time.time() - _parse_iso(metrics.since) < 60


def _parse_iso(value: str) -> float:
    import datetime as dt

    return dt.datetime.fromisoformat(value).timestamp()


@db
def test_pool_metrics_configuration_fields() -> None:
    """Configuration fields come from the pool's settings and its database."""
    main = get_pool_metrics("main")
    assert (main.database, main.backend) == ("default", EXPECTED_BACKEND)
    assert main.pool_class == "WaitAwareQueuePool"
    assert (main.pool_size, main.max_overflow) == (5, 5)
    assert main.timeout == 10.0
    assert main.recycle == 1800  # POOL_RECYCLE's default
    assert main.capacity == 10
    assert main.circuit_state == "closed"

    other = get_pool_metrics("other")
    assert (other.database, other.backend) == ("other", EXPECTED_BACKEND)
    assert other.pool_class == "WaitAwareQueuePool"
    assert (other.pool_size, other.max_overflow, other.timeout) == (2, 0, 5.0)
    assert other.capacity == 2


@db
def test_fresh_pool_reports_zeroes() -> None:
    """Before any use: no connection, no counter, empty distributions."""
    metrics = get_pool_metrics("main")
    for key in (*COUNTERS, "checked_out", "checked_in", "overflow", "waiting", "total"):
        assert getattr(metrics, key) == 0, key
    assert metrics.utilization == 0.0
    assert metrics.acquire_wait_ms == Percentiles()
    assert metrics.hold_ms == Percentiles()
    assert metrics.connect_ms == Percentiles()


# -- gauges and counters -----------------------------------------------------------------------


@db
def test_counters_after_sequential_scopes() -> None:
    """N scopes: N checkouts, one connection opened, gauges equal the pool's accessors."""
    events = Events("main")
    for _ in range(7):
        select_one()
    metrics = assert_gauges_match_pool("main")
    assert metrics.checkouts == events.checkouts == 7
    assert metrics.connects == events.connects == 1  # one connection, reused
    assert metrics.checked_in == 1
    assert metrics.checked_out == 0
    assert (metrics.invalidations, metrics.timeouts, metrics.connect_errors) == (0, 0, 0)
    assert metrics.acquire_wait_ms.count == 7
    assert metrics.hold_ms.count == 7
    assert metrics.connect_ms.count == 1
    assert metrics.connect_ms.max > 0
    for found in (metrics.acquire_wait_ms, metrics.hold_ms, metrics.connect_ms):
        assert_ordered(found)


@db
def test_a_scope_that_runs_nothing_checks_out_nothing() -> None:
    """A scope that never executes a statement never checks a connection out."""
    with session_scope():
        pass
    metrics = get_pool_metrics("main")
    assert (metrics.checkouts, metrics.connects) == (0, 0)


@db
def test_gauges_while_connections_are_held() -> None:
    """While scopes hold connections, checked_out, overflow, utilization follow the pool."""
    holders = [Holder("main") for _ in range(7)]  # size 5 + 2 overflow
    try:
        metrics = assert_gauges_match_pool("main")
        assert metrics.checked_out == 7
        assert metrics.overflow == 2
        assert metrics.checked_in == 0
        assert metrics.total == 7
        assert metrics.utilization == pytest.approx(0.7)
        assert metrics.checkouts == 7
        assert metrics.connects == 7
    finally:
        for holder in holders:
            holder.stop()
    metrics = assert_gauges_match_pool("main")
    assert metrics.checked_out == 0
    assert metrics.utilization == 0.0
    # the two overflow connections were closed when they came back to a full pool
    assert metrics.checked_in == 5
    assert metrics.hold_ms.count == 7
    assert metrics.peak_checked_out == 7


@db
def test_a_detached_connection_leaves_the_pool_gauges() -> None:
    """Connection.detach() takes the connection out of the pool: no longer counted in use."""
    with get_engine().connect() as connection:
        connection.exec_driver_sql("SELECT 1")
        assert get_pool_metrics("main").checked_out == 1
        connection.detach()
        assert assert_gauges_match_pool("main").checked_out == 0
    metrics = assert_gauges_match_pool("main")
    assert metrics.checked_out == 0
    assert metrics.hold_ms.count == 1
    recorder = get_entry("main").probe
    assert isinstance(recorder, PoolRecorder)
    assert recorder.checked_out_for() == []  # nothing left to be reported as a leak
    assert recorder.scan_leaks(now=time.perf_counter() + 3600) == 0


@db
def test_acquire_wait_includes_the_pre_ping(monkeypatch: pytest.MonkeyPatch) -> None:
    """As HikariCP measures it: from asking the pool to holding a checked connection."""
    select_one()  # a pooled connection; the next checkout pings it
    dialect = get_engine().dialect
    ping = dialect.do_ping

    def slow_ping(dbapi_connection: Any) -> bool:
        time.sleep(0.05)
        return bool(ping(dbapi_connection))

    monkeypatch.setattr(dialect, "do_ping", slow_ping)
    reset_metrics("main")
    select_one()
    waited = get_pool_metrics("main").acquire_wait_ms
    assert waited.count == 1
    assert waited.max >= 50.0


class Injected(Exception):
    """Raised by a scope after it invalidated its connection."""


@db
@pytest.mark.slow
def test_exact_counters_under_threads_with_invalidations(settings: Any) -> None:
    """8 threads x 200 scopes on a pool of 3 + 2 with injected invalidations: exact counters."""
    configure(
        settings,
        {"stress": {"DATABASE": "default", "POOL_SIZE": 3, "MAX_OVERFLOW": 2, "POOL_TIMEOUT": 30}},
    )
    threads_n, scopes_n, every = 8, 200, 25
    events = Events("stress")
    start = threading.Barrier(threads_n)
    errors: list[BaseException] = []
    injected = [0] * threads_n

    def worker(index: int) -> None:
        try:
            start.wait(10)
            for n in range(1, scopes_n + 1):
                try:
                    with session_scope("stress") as session:
                        session.execute(text("SELECT 1"))
                        if n % every == 0:
                            session.connection().invalidate()
                            injected[index] += 1
                            raise Injected
                except Injected:
                    pass
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []

    total = threads_n * scopes_n
    invalidated = sum(injected)
    assert invalidated == threads_n * (scopes_n // every) == 64
    metrics = assert_gauges_match_pool("stress")
    assert metrics.checked_out == 0
    assert get_engine("stress").pool.checkedout() == 0  # type: ignore[attr-defined]
    assert metrics.checkouts == events.checkouts == total
    assert metrics.invalidations == events.invalidations == invalidated
    assert metrics.connects == events.connects
    assert metrics.timeouts == 0
    assert metrics.connect_errors == 0
    assert 1 <= metrics.peak_checked_out <= 5
    # Every connection opened was either invalidated (and closed), closed when it
    # came back to a full pool (overflow), or is still pooled.
    pooled = metrics.checked_in
    assert events.closes_after_invalidation == invalidated
    assert metrics.connects <= invalidated + events.other_closes + pooled
    # Closing what is pooled accounts for every connection ever opened.
    get_engine("stress").pool.dispose()
    assert metrics.connects == invalidated + events.other_closes
    assert metrics.connects >= invalidated + 1

    assert metrics.acquire_wait_ms.count == metrics.checkouts
    assert metrics.hold_ms.count == metrics.checkouts
    assert metrics.connect_ms.count == metrics.connects
    for found in (metrics.acquire_wait_ms, metrics.hold_ms, metrics.connect_ms):
        assert_ordered(found)
    stats = get_session_stats()
    assert stats["total_sessions"] == total
    assert stats["failed_sessions"] == invalidated
    assert stats["committed_transactions"] == total - invalidated
    assert stats["active_sessions"] == 0


@db
def test_waiting_gauge_and_timeouts(settings: Any) -> None:
    """A caller blocked on an exhausted pool shows as waiting; a timeout is counted."""
    configure(
        settings,
        {"tiny": {"DATABASE": "default", "POOL_SIZE": 1, "MAX_OVERFLOW": 0, "POOL_TIMEOUT": 10}},
    )
    holder = Holder("tiny")
    waited: list[float] = []
    failures: list[BaseException] = []

    def waiter() -> None:
        started = time.monotonic()
        try:
            select_one("tiny")
        except BaseException as exc:
            failures.append(exc)
        waited.append(time.monotonic() - started)

    thread = threading.Thread(target=waiter, daemon=True)
    try:
        thread.start()
        assert wait_until(lambda: get_pool_metrics("tiny").waiting == 1)
        metrics = get_pool_metrics("tiny")
        assert metrics.checked_out == 1
        assert metrics.utilization == 1.0
        time.sleep(0.1)
    finally:
        holder.stop()
    thread.join(30)
    assert failures == []
    metrics = get_pool_metrics("tiny")
    assert metrics.waiting == 0
    assert metrics.timeouts == 0
    assert metrics.checkouts == 2
    assert metrics.acquire_wait_ms.count == 2
    assert metrics.acquire_wait_ms.max >= 100 * 0.97  # ms, within the histogram's precision


@db
def test_timeouts_are_counted_on_pool_exhausted(settings: Any) -> None:
    """PoolExhaustedError after POOL_TIMEOUT: timeouts == 1, waiting back to 0."""
    configure(
        settings,
        {"tiny": {"DATABASE": "default", "POOL_SIZE": 1, "MAX_OVERFLOW": 0, "POOL_TIMEOUT": 0.2}},
    )
    holder = Holder("tiny")
    try:
        started = time.monotonic()
        with pytest.raises(PoolExhaustedError) as info:
            select_one("tiny")
        assert 0.15 <= time.monotonic() - started < 5
        assert info.value.pool == "tiny"
        metrics = get_pool_metrics("tiny")
        assert metrics.timeouts == 1
        assert metrics.waiting == 0
        assert metrics.checked_out == 1
        assert metrics.checkouts == 1  # the timed-out attempt checked nothing out
    finally:
        holder.stop()
    assert get_performance_metrics()["total_errors"] == 1


@db
def test_a_timeout_after_a_lost_race_for_overflow_is_counted_once(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """QueuePool retries its own _do_get when another thread takes the last overflow slot.

    The retry goes through WaitAwareQueuePool._do_get again; its timeout is one timeout.
    """
    configure(
        settings,
        {"tight": {"DATABASE": "default", "POOL_SIZE": 1, "MAX_OVERFLOW": 1, "POOL_TIMEOUT": 0.2}},
    )
    holder = Holder("tight")
    try:
        pool = get_engine("tight").pool

        def overflow_taken_meanwhile() -> bool:
            pool._overflow = pool._max_overflow  # type: ignore[attr-defined]
            return False

        monkeypatch.setattr(pool, "_inc_overflow", overflow_taken_meanwhile)
        with pytest.raises(PoolExhaustedError):
            select_one("tight")
        metrics = get_pool_metrics("tight")
        assert metrics.timeouts == 1
        assert metrics.waiting == 0
    finally:
        holder.stop()


@db
def test_dispose_closes_a_connection_in_use_when_it_comes_back(settings: Any) -> None:
    """Disposed while in use: still counted as checked out, and closed, not pooled, on return.

    The new pool's slot is free meanwhile: the health check does not call it full.
    """
    configure(settings, {"disposable": {"DATABASE": "default", "POOL_SIZE": 1, "MAX_OVERFLOW": 0}})
    engine = get_engine("disposable")
    connection = engine.connect()
    connection.execute(text("SELECT 1"))
    driver_connection = connection.connection.dbapi_connection
    old_pool = engine.pool
    engine.dispose()
    assert engine.pool is not old_pool
    assert get_pool_metrics("disposable").checked_out == 1  # the old pool's, still held
    # Busy by count (the connection still out counts), but not full: the check pinged.
    assert check_pool("disposable")["detail"] != "every connection is in use"
    recorder = get_entry("disposable").probe
    assert isinstance(recorder, PoolRecorder)
    closed_before = recorder.closed
    connection.close()
    assert get_pool_metrics("disposable").checked_out == 0
    assert old_pool.checkedin() == 0  # type: ignore[attr-defined]
    assert recorder.closed == closed_before + 1
    if hasattr(driver_connection, "closed"):  # psycopg, psycopg2: a closed flag
        assert driver_connection.closed


@db
def test_a_pool_disposed_by_hand_and_used_on_keeps_its_connections(settings: Any) -> None:
    """Pool.dispose() alone, not Engine.dispose(): the pool stays the engine's and keeps working."""
    configure(
        settings,
        {"by-hand": {"DATABASE": "default", "POOL_SIZE": 1, "MAX_OVERFLOW": 0, "POOL_TIMEOUT": 1}},
    )
    pool = get_engine("by-hand").pool
    select_one("by-hand")
    pool.dispose()
    for _ in range(4):  # more checkouts than the pool's capacity, one at a time
        select_one("by-hand")
    assert pool.checkedin() == 1  # type: ignore[attr-defined]
    assert get_pool_metrics("by-hand").timeouts == 0


@db
def test_pools_without_a_limit_report_no_capacity_and_stay_healthy(settings: Any) -> None:
    """A NullPool (PgBouncer in front) has no size to saturate: capacity 0, never degraded."""
    from mingus_sessions.metrics.prometheus import render_prometheus

    configure(
        settings,
        {
            "direct": {
                "DATABASE": "default",
                "POOL_CLASS": "null",
                "POOL_SIZE": 1,
                "MAX_OVERFLOW": 0,
            }
        },
    )
    with session_scope("direct") as session:
        session.execute(text("SELECT 1"))
        metrics = get_pool_metrics("direct")
        assert metrics.checked_out == 1
        assert (metrics.capacity, metrics.utilization) == (0, 0.0)
        assert check_pool("direct")["status"] == "healthy"
        exposition = render_prometheus()
    assert 'db_client_connection_max{pool="direct"}' not in exposition
    assert 'db_client_connection_max{pool="main"}' in exposition


@db
def test_null_pool_reports_connections_in_use(settings: Any) -> None:
    """POOL_CLASS "null": checked_out and total from what the recorder saw; no crash."""
    configure(settings, {"direct": {"DATABASE": "default", "POOL_CLASS": "null"}})
    before = get_pool_metrics("direct")
    assert before.pool_class == "NullPool"
    assert (before.checked_out, before.total, before.overflow) == (0, 0, 0)
    with session_scope("direct") as session:
        session.execute(text("SELECT 1"))
        inside = get_pool_metrics("direct")
        assert inside.checked_out == 1
        assert inside.total == 1
        assert inside.checked_in == 0
    after = get_pool_metrics("direct")
    assert (after.checked_out, after.checked_in, after.total) == (0, 0, 0)
    assert after.checkouts == 1
    assert after.connects == 1  # NullPool opens one per checkout and closes it after
    select_one("direct")
    after = get_pool_metrics("direct")
    assert (after.checkouts, after.connects, after.total) == (2, 2, 0)
    assert json.dumps(after.as_dict())
    assert get_pool_metrics()["direct"].pool_class == "NullPool"


# -- metrics never break the user's work -------------------------------------------------------


# The checkout and checkin listeners guard their own bodies (no wrapper call on the
# hot path), so a failure is injected into what they call: the stack walk of a checkout
# outside a scope and the hold-time histogram. The other listeners are replaced whole.
_INJECTED = {
    "_on_checkout": ("mingus_sessions._core.recorder.capture_stack", None),
    "_on_checkin": ("mingus_sessions._core.recorder.Histogram.record", None),
}


@db
@pytest.mark.parametrize(
    "method",
    [
        "_on_do_connect",
        "_on_connect",
        "_on_checkout",
        "_on_checkin",
        "_on_close",
        "_on_invalidate",
        "_keep_slow",
    ],
)
def test_a_failing_recorder_never_breaks_a_transaction(
    method: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    settings: Any,
) -> None:
    """A recorder listener that raises is logged at DEBUG; the scope commits normally."""
    if method == "_keep_slow":
        configure(settings, SLOW_QUERY_THRESHOLD=1e-9)  # every statement is "slow"

    def broken(*args: Any) -> None:
        raise RuntimeError(*BUG)

    broken.__name__ = method
    # The listeners are bound when the engine is built, which happens on first use.
    if method in _INJECTED:
        monkeypatch.setattr(_INJECTED[method][0], broken)
    else:
        monkeypatch.setattr(PoolRecorder, method, broken)
    caplog.set_level(logging.DEBUG, logger="mingus_sessions")
    with session_scope() as session:
        session.execute(
            text("INSERT INTO testapp_note (title, body) VALUES (:title, '')"),
            {"title": f"kept-{method}"},
        )
    with get_engine().connect() as conn:  # the invalidate and close listeners too
        conn.exec_driver_sql("SELECT 1")
        conn.invalidate()
    get_engine().dispose()
    with session_scope() as session:
        found = session.execute(text("SELECT title FROM testapp_note")).scalars().all()
    assert found == [f"kept-{method}"]
    failed = [
        r
        for r in caplog.records
        if r.exc_info and isinstance(r.exc_info[1], RuntimeError) and r.exc_info[1].args == BUG
    ]
    assert failed, "the failure was not logged"
    assert all(r.levelno == logging.DEBUG for r in failed)
    assert all(r.name == "mingus_sessions" for r in failed)
    get_pool_metrics("main")  # and the snapshot still reads


@db
def test_a_failing_acquire_histogram_never_breaks_a_transaction(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Recording the acquire wait is metrics code too: it must not fail a checkout."""

    def broken(self: Histogram, micros: int) -> None:
        raise RuntimeError("metrics bug")

    opened: list[Any] = []
    event.listen(
        get_engine(), "connect", lambda dbapi_connection, record: opened.append(dbapi_connection)
    )
    monkeypatch.setattr(Histogram, "record", broken)
    try:
        select_one()
    finally:
        monkeypatch.undo()
        for dbapi_connection in opened:  # one the pool may have lost: no ResourceWarning later
            dbapi_connection.close()
    assert get_engine().pool.checkedout() == 0  # type: ignore[attr-defined]


# -- sessions, transactions, performance -------------------------------------------------------


@db
def test_session_stats_shape_and_counts() -> None:
    """Exact counts of sessions, commits, rollbacks, failures, savepoints and retries."""
    stats = get_session_stats()
    assert set(stats) == SESSION_KEYS
    assert all(type(value) is int for value in stats.values())
    assert set(stats.values()) == {0}

    select_one()  # 1 session, committed
    with session_scope() as session:  # 1 session, committed, with a failed savepoint
        session.execute(text("SELECT 1"))
        with pytest.raises(Boom), session_scope():
            assert get_session_stats()["active_sessions"] == 1
            raise Boom
    with pytest.raises(Boom), session_scope() as session:  # 1 session, rolled back
        session.execute(text("SELECT 1"))
        raise Boom
    with session_scope("other") as session:  # 1 session on another pool, savepoint released
        with session_scope("other") as inner:
            inner.execute(text("SELECT 1"))
        assert get_session_stats()["active_sessions"] == 1

    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise DatabaseUnavailableError("gone for a moment", pool="main")
        return "ok"

    assert execute_with_retry(flaky, base_delay=0.001, max_delay=0.001, max_retries=3) == "ok"

    assert get_session_stats() == {
        "total_sessions": 4,
        "active_sessions": 0,
        "committed_transactions": 3,
        "transaction_rollbacks": 2,  # the failed savepoint and the failed scope
        "failed_sessions": 2,  # the inner scope and the outer one that raised
        "savepoints": 2,
        "retries": 2,
    }
    assert get_performance_metrics()["sessions"] == get_session_stats()


@db
def test_transaction_stats_of_named_transactions() -> None:
    """named_transaction records count, failures, average and longest duration by name."""
    from mingus_sessions.celery import TransactionManager

    reset_metrics()
    assert get_transaction_stats() == {}
    manager = TransactionManager()
    with manager.named_transaction("metrics.ok") as session:
        session.execute(text("SELECT 1"))
    with manager.named_transaction("metrics.ok") as session:
        session.execute(text("SELECT 1"))
        time.sleep(0.03)
    with pytest.raises(Boom), manager.named_transaction("metrics.fails", pool="other"):
        raise Boom
    manager.batch_transaction(
        [lambda s: s.execute(text("SELECT 1")), lambda s: s.execute(text("SELECT 2"))],
        "metrics.batch",
    )

    found = get_transaction_stats()
    assert set(found) == {"metrics.ok", "metrics.fails", "metrics.batch"}
    for entry in found.values():
        assert set(entry) == {"count", "failures", "avg_ms", "max_ms"}
        assert 0 < entry["avg_ms"] <= entry["max_ms"]
    assert (found["metrics.ok"]["count"], found["metrics.ok"]["failures"]) == (2, 0)
    assert found["metrics.ok"]["max_ms"] >= 30
    assert found["metrics.ok"]["avg_ms"] >= 15
    assert (found["metrics.fails"]["count"], found["metrics.fails"]["failures"]) == (1, 1)
    assert (found["metrics.batch"]["count"], found["metrics.batch"]["failures"]) == (1, 0)
    assert json.loads(json.dumps(found)) == found
    assert get_pool_metrics("other").checkouts == 0  # the failed one never executed


@db
def test_performance_metrics_keys_and_values() -> None:
    """get_performance_metrics(): totals across pools, mean wait and hold in ms, sessions."""
    for _ in range(3):
        select_one()
    select_one("other")
    found = get_performance_metrics()
    assert set(found) == {
        "total_checkouts",
        "total_errors",
        "error_rate",
        "average_checkout_time",
        "average_hold_time",
        "slow_queries",
        "leaks",
        "sessions",
        "timestamp",
    }
    assert found["total_checkouts"] == 4
    assert (found["total_errors"], found["error_rate"]) == (0, 0.0)
    assert found["average_checkout_time"] >= 0
    assert found["average_hold_time"] > 0
    assert (found["slow_queries"], found["leaks"]) == (0, 0)
    assert found["sessions"]["total_sessions"] == 4
    assert time.time() - _parse_iso(found["timestamp"]) < 60
    json.dumps(found)


@db
def test_reset_metrics_of_one_pool_and_of_all(settings: Any) -> None:
    """reset_metrics(pool) zeroes that pool only; reset_metrics() sessions too; gauges stay."""
    for _ in range(3):
        select_one()
    select_one("other")
    from mingus_sessions.celery import TransactionManager

    with TransactionManager().named_transaction("metrics.reset"):
        pass
    since = get_pool_metrics("main").since
    time.sleep(0.01)

    holder = Holder("main")  # a live connection across the resets
    try:
        reset_metrics("main")
        main, other = get_pool_metrics("main"), get_pool_metrics("other")
        for key in COUNTERS:
            assert getattr(main, key) == 0, key
        assert main.acquire_wait_ms == main.connect_ms == Percentiles()
        assert main.since > since
        assert main.checked_out == 1  # the live gauge is kept
        assert main.checked_in == 0
        assert other.checkouts == 1
        assert other.connects == 1
        assert get_session_stats()["total_sessions"] == 6
        assert "metrics.reset" in get_transaction_stats()

        reset_metrics()
        other = get_pool_metrics("other")
        assert (other.checkouts, other.connects) == (0, 0)
        stats = get_session_stats()
        for key in SESSION_KEYS - {"active_sessions"}:
            assert stats[key] == 0, key
        assert get_transaction_stats() == {}
        assert get_pool_metrics("main").checked_out == 1
    finally:
        holder.stop()
    main = assert_gauges_match_pool("main")
    assert main.checked_out == 0
    assert main.checkouts == 0
    recorder = get_entry("main").probe
    assert isinstance(recorder, PoolRecorder)
    assert recorder.in_use == 0
    select_one()
    main = assert_gauges_match_pool("main")
    assert (main.checkouts, main.connects) == (1, 0)  # a pooled connection was reused
    assert main.peak_checked_out == 1


@db
def test_reset_metrics_keeps_the_active_sessions_gauge() -> None:
    """A session open across reset_metrics() still counts as active, and 0 once closed."""
    with session_scope() as session:
        session.execute(text("SELECT 1"))
        reset_metrics()
        assert get_session_stats()["active_sessions"] == 1
    assert get_session_stats()["active_sessions"] == 0


@db
def test_monitoring_off_uses_a_plain_probe(settings: Any) -> None:
    """MONITORING False: no recorder, no listeners, no clock reads; gauges still right."""
    configure(settings, MONITORING=False)
    engine = get_engine("main")
    probe = get_entry("main").probe
    assert type(probe).__name__ == "PoolProbe"
    assert probe.acquire is None  # WaitAwareQueuePool reads no clock
    # SQLAlchemy's checkout and statement paths stay event-free.
    assert len(engine.pool.dispatch.checkout) == 0
    assert len(engine.pool.dispatch.checkin) == 0
    assert len(engine.dispatch.before_cursor_execute) == 0
    assert len(engine.dispatch.after_cursor_execute) == 0
    assert len(engine.dialect.dispatch.do_execute) == 0
    for _ in range(3):
        select_one()
    with session_scope() as session:
        session.execute(text("SELECT 1"))
        assert get_pool_metrics("main").checked_out == 1
    metrics = assert_gauges_match_pool("main")
    for key in COUNTERS:
        assert getattr(metrics, key) == 0, key
    assert metrics.checked_in == 1
    assert metrics.acquire_wait_ms == Percentiles()
    assert metrics.since == ""
    assert get_session_stats()["total_sessions"] == 4  # session stats are kept regardless
    reset_metrics()  # no crash without a recorder


# -- health ------------------------------------------------------------------------------------


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
    assert result["detail"] == "no answer within 0.3 s"
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
