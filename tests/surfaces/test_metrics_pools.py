"""Pool metrics: shapes, and gauges and counters against the pool's own accessors.

Runs on every backend of the suite (``MINGUS_TEST_DATABASE``). Each test gets
fresh engines (the suite's plugin disposes them), so every recorder starts at
zero.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from typing import Any

import pytest
from sqlalchemy import event, text

from mingus_sessions import PoolExhaustedError, get_engine, session_scope
from mingus_sessions._core.pools import RETURNED_AT
from mingus_sessions._core.recorder import PoolRecorder
from mingus_sessions.engines import get_entry
from mingus_sessions.metrics import (
    Percentiles,
    PoolMetrics,
    get_performance_metrics,
    get_pool_metrics,
    get_session_stats,
    reset_metrics,
)
from mingus_sessions.metrics.api import check_pool
from tests.helpers import Holder
from tests.surfaces.helpers import (
    COUNTERS,
    EXPECTED_BACKEND,
    assert_gauges_match_pool,
    configure,
    db,
    parse_iso,
    select_one,
    wait_until,
)

#: No sampler reads or publishes these pools while a test runs (tests/surfaces/conftest.py).
pytestmark = pytest.mark.usefixtures("no_sampler")

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


def assert_ordered(found: Percentiles) -> None:
    assert 0 <= found.p50 <= found.p95 <= found.p99 <= found.max


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
    assert time.time() - parse_iso(metrics.since) < 60


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
    select_one()  # a pooled connection; the next checkout pings it...
    pool = get_engine().pool
    for record in list(pool._pool._idle):  # type: ignore[attr-defined]
        # ...once it sat idle past PING_IDLE (before that, no round trip is made).
        record.__dict__[RETURNED_AT] = time.monotonic() - 10.0  # PING_IDLE is 1 s
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
    maxima = [
        line for line in exposition.splitlines() if line.startswith("db_client_connection_max{")
    ]
    assert not [line for line in maxima if 'pool="direct"' in line]
    assert [line for line in maxima if 'pool="main"' in line]


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
