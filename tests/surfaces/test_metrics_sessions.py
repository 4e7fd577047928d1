"""Metrics never break the user's work; session, transaction and performance figures; resets.

Runs on every backend of the suite (``MINGUS_TEST_DATABASE``), on fresh
engines and zeroed counters.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import pytest
from sqlalchemy import event, text

from mingus_sessions import execute_with_retry, get_engine, session_scope
from mingus_sessions._core.histogram import Histogram
from mingus_sessions._core.recorder import PoolRecorder
from mingus_sessions.engines import get_entry
from mingus_sessions.errors import DatabaseUnavailableError
from mingus_sessions.metrics import (
    Percentiles,
    get_performance_metrics,
    get_pool_metrics,
    get_session_stats,
    get_transaction_stats,
    reset_metrics,
)
from tests.helpers import Holder
from tests.surfaces.helpers import (
    COUNTERS,
    SESSION_KEYS,
    assert_gauges_match_pool,
    configure,
    db,
    parse_iso,
    select_one,
)

#: No sampler reads or publishes these pools while a test runs (tests/surfaces/conftest.py).
pytestmark = pytest.mark.usefixtures("no_sampler")

BUG = ("metrics bug",)


class Boom(Exception):
    """A non-database failure raised inside scopes."""


# -- metrics never break the user's work -------------------------------------------------------


# The checkout and checkin hooks (called by the queue pool itself) guard their own
# bodies (no wrapper call on the hot path), so a failure is injected into what they
# call: the stack walk of a checkout outside a scope and the hold-time histogram. The
# other listeners are replaced whole.
_INJECTED = {
    "checked_out": ("mingus_sessions._core.recorder.capture_stack", None),
    "checked_in": ("mingus_sessions._core.recorder.Histogram.record", None),
}


@db
@pytest.mark.parametrize(
    "method",
    [
        "_on_do_connect",
        "_on_connect",
        "checked_out",
        "checked_in",
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
    assert time.time() - parse_iso(found["timestamp"]) < 60
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
