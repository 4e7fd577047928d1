"""Leak detection and slow-query logging."""

from __future__ import annotations

import inspect
import json
import logging
import re
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text

from mingus_sessions import get_engine, get_session, session_scope
from mingus_sessions._core.recorder import SLOWEST_KEPT, PoolRecorder
from mingus_sessions.engines import get_entry
from mingus_sessions.metrics import get_pool_metrics, start_monitoring
from mingus_sessions.sessions import LazyScope
from tests.surfaces.helpers import BACKEND, configure, db, records, select_one, wait_until

#: No sampler before the test, none after it (tests/surfaces/conftest.py).
pytestmark = pytest.mark.usefixtures("no_sampler")

THIS_FILE = Path(__file__).name


# -- leak detection ----------------------------------------------------------------------------


@db
def test_leak_reported_once_by_the_sampler_then_returned(
    settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A session left open past LEAK_THRESHOLD: one warning with its stack, then "returned"."""
    configure(settings, LEAK_THRESHOLD=0.2, FLEET={"CACHE": "default", "INTERVAL": 0.1})
    caplog.set_level(logging.WARNING, logger="mingus_sessions.leaks")
    session = get_session()
    try:
        line = inspect.currentframe().f_lineno + 1  # type: ignore[union-attr]
        session.execute(text("SELECT 1"))  # the checkout the warning must point at
        assert start_monitoring() is True
        assert wait_until(lambda: records(caplog, "mingus_sessions.leaks"), timeout=1.5)
        time.sleep(0.5)  # five more samples: still one report
        found = records(caplog, "mingus_sessions.leaks")
        assert len(found) == 1
        message = found[0].getMessage()
        assert found[0].levelno == logging.WARNING
        assert "pool main" in message
        assert THIS_FILE in message
        assert f"line {line}," in message
        assert "test_leak_reported_once_by_the_sampler_then_returned" in message
        metrics = get_pool_metrics("main")
        assert metrics.leaks == 1
        assert metrics.checked_out == 1
    finally:
        session.close()
    found = records(caplog, "mingus_sessions.leaks")
    assert len(found) == 2
    assert "returned" in found[1].getMessage()
    assert "pool main" in found[1].getMessage()
    metrics = get_pool_metrics("main")
    assert metrics.leaks == 1
    assert metrics.checked_out == 0
    time.sleep(0.3)  # the sampler does not report it again
    assert len(records(caplog, "mingus_sessions.leaks")) == 2
    assert get_pool_metrics("main").leaks == 1


@db
def test_leak_reported_at_checkin_without_the_sampler(
    settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Without the sampler, a connection held past the threshold is reported when returned."""
    configure(settings, LEAK_THRESHOLD=0.1)
    caplog.set_level(logging.WARNING, logger="mingus_sessions.leaks")
    opened = inspect.currentframe().f_lineno + 1  # type: ignore[union-attr]
    with session_scope() as session:
        executed = inspect.currentframe().f_lineno + 1  # type: ignore[union-attr]
        session.execute(text("SELECT 1"))
        time.sleep(0.15)
        assert records(caplog, "mingus_sessions.leaks") == []
    found = records(caplog, "mingus_sessions.leaks")
    assert len(found) == 2
    assert "held for" in found[0].getMessage()
    # A scope's report points at where the scope opened its session (or at the checkout).
    first = re.search(rf'File "[^"]*{THIS_FILE}", line (\d+), in (\w+)', found[0].getMessage())
    assert first is not None
    assert int(first.group(1)) in (opened, executed)
    assert first.group(2) == "test_leak_reported_at_checkin_without_the_sampler"
    assert THIS_FILE in found[0].getMessage()
    assert "returned" in found[1].getMessage()
    assert get_pool_metrics("main").leaks == 1

    select_one()  # a short checkout is no leak
    assert len(records(caplog, "mingus_sessions.leaks")) == 2
    assert get_pool_metrics("main").leaks == 1


def _hold_in_a_scope(opened_line: list[int], release: threading.Event) -> None:
    opened_line.append(inspect.currentframe().f_lineno + 1)  # type: ignore[union-attr]
    with session_scope() as session:
        session.execute(text("SELECT 1"))
        release.wait(10)


def _calls_the_holder(opened_line: list[int], release: threading.Event) -> None:
    _hold_in_a_scope(opened_line, release)


@db
def test_leak_in_a_scope_of_another_thread_shows_the_callers(
    settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The sampler reads the callers of the frame that opened the scope from its live thread."""
    configure(settings, LEAK_THRESHOLD=0.2, FLEET={"CACHE": "default", "INTERVAL": 0.05})
    caplog.set_level(logging.WARNING, logger="mingus_sessions.leaks")
    opened_line: list[int] = []
    release = threading.Event()
    holder = threading.Thread(target=_calls_the_holder, args=(opened_line, release))
    holder.start()
    try:
        assert start_monitoring()
        assert wait_until(lambda: records(caplog, "mingus_sessions.leaks"), timeout=3)
        message = records(caplog, "mingus_sessions.leaks")[0].getMessage()
    finally:
        release.set()
        holder.join(10)
    frames = re.findall(rf'File "[^"]*{THIS_FILE}", line (\d+), in (\w+)', message)
    assert frames[:2] == [
        (str(opened_line[0]), "_hold_in_a_scope"),
        (str(inspect.getsourcelines(_calls_the_holder)[1] + 1), "_calls_the_holder"),
    ]
    assert "returned since" not in message
    assert wait_until(lambda: get_pool_metrics("main").checked_out == 0)


@db
def test_leak_whose_opening_function_returned_says_so(
    settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A lazy scope opened in a function that has returned: that frame, and a note."""
    configure(settings, LEAK_THRESHOLD=0.05)
    caplog.set_level(logging.WARNING, logger="mingus_sessions.leaks")
    scope = LazyScope()
    token = scope.activate()
    try:

        def open_it() -> int:
            line = inspect.currentframe().f_lineno + 1  # type: ignore[union-attr]
            scope.session.execute(text("SELECT 1"))
            return line

        line = open_it()
        time.sleep(0.1)
        recorder = get_entry("main").probe
        assert isinstance(recorder, PoolRecorder)
        assert recorder.scan_leaks() == 1
    finally:
        scope.finish(commit=False)
        LazyScope.deactivate(token)
    message = records(caplog, "mingus_sessions.leaks")[0].getMessage()
    assert f"line {line}, in open_it" in message
    assert "that function has returned since" in message
    assert len(records(caplog, "mingus_sessions.leaks")) == 2  # then "returned after"
    assert get_pool_metrics("main").leaks == 1


@db
def test_no_leak_detection_when_threshold_is_none(
    settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """LEAK_THRESHOLD None: no stack captured, nothing reported."""
    configure(settings, LEAK_THRESHOLD=None, FLEET={"CACHE": "default", "INTERVAL": 0.05})
    caplog.set_level(logging.WARNING, logger="mingus_sessions.leaks")
    assert start_monitoring()
    with session_scope() as session:
        session.execute(text("SELECT 1"))
        time.sleep(0.2)
    assert records(caplog, "mingus_sessions.leaks") == []
    assert get_pool_metrics("main").leaks == 0


# -- slow queries ------------------------------------------------------------------------------


def slow_statement(ms: int) -> tuple[str, str]:
    """A statement that takes ``ms`` ms and carries the bound parameter :marker."""
    if BACKEND == "postgresql":
        return f"SELECT pg_sleep({ms / 1000}), CAST(:marker AS TEXT)", "pg_sleep"
    if BACKEND == "mysql":
        return f"SELECT SLEEP({ms / 1000}), :marker", "SLEEP"
    return f"SELECT sleep_ms({ms}), :marker", "sleep_ms"


def enable_sqlite_sleep(pool: str | None = None) -> None:
    """Register sleep_ms() on every new SQLite connection of ``pool`` (before the first)."""
    if BACKEND != "sqlite":
        return
    engine = get_engine(pool)
    assert engine.pool.checkedin() == 0  # type: ignore[attr-defined]

    @event.listens_for(engine, "connect")
    def _sleep_fn(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.create_function("sleep_ms", 1, lambda ms: time.sleep(ms / 1000) or 0)


MARKER = "needle-3f9c7a-bound-value"


@db
@pytest.mark.parametrize("log_parameters", [False, True])
def test_slow_query_logged_with_pool_duration_statement(
    log_parameters: bool, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """One WARNING per slow statement: pool, duration, statement; parameters only if allowed."""
    configure(settings, SLOW_QUERY_THRESHOLD=0.05, LOG_QUERY_PARAMETERS=log_parameters)
    caplog.set_level(logging.DEBUG, logger="mingus_sessions")
    enable_sqlite_sleep()
    statement, function = slow_statement(100)
    with session_scope() as session:
        session.execute(text("SELECT 1"))
        session.execute(text(statement), {"marker": MARKER})
        session.execute(text("SELECT 2"))

    found = records(caplog, "mingus_sessions.slow_queries")
    assert len(found) == 1
    record = found[0]
    message = record.getMessage()
    assert record.levelno == logging.WARNING
    assert "pool main" in message
    seconds = float(re.search(r"([0-9.]+) s\b", message).group(1))  # type: ignore[union-attr]
    assert 0.09 <= seconds < 5
    assert function in message
    if log_parameters:
        assert MARKER in message
    else:
        assert MARKER not in message
        assert MARKER not in repr(record.args)
        # nor anywhere else in what this package logged
        for other in caplog.records:
            assert MARKER not in other.getMessage()

    metrics = get_pool_metrics("main")
    assert metrics.slow_queries == 1
    recorder = get_entry("main").probe
    assert isinstance(recorder, PoolRecorder)
    slowest = recorder.slowest()
    assert len(slowest) == 1
    entry = slowest[0].as_dict()
    assert entry["duration_ms"] >= 90
    assert function in entry["statement"]
    assert ("parameters" in entry) is log_parameters
    if log_parameters:
        assert MARKER in entry["parameters"]
    assert MARKER not in json.dumps(get_pool_metrics("main").as_dict())


@db
def test_slow_query_logging_off_with_threshold_none(
    settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """SLOW_QUERY_THRESHOLD None: no statement listeners, nothing logged or counted."""
    configure(settings, SLOW_QUERY_THRESHOLD=None)
    caplog.set_level(logging.WARNING, logger="mingus_sessions.slow_queries")
    enable_sqlite_sleep()
    engine = get_engine()
    assert len(engine.dispatch.before_cursor_execute) == 0
    assert len(engine.dispatch.after_cursor_execute) == 0
    assert len(engine.dialect.dispatch.do_execute) == 0
    statement, _ = slow_statement(60)
    with session_scope() as session:
        session.execute(text(statement), {"marker": MARKER})
    assert records(caplog, "mingus_sessions.slow_queries") == []
    assert get_pool_metrics("main").slow_queries == 0


@db
def test_slowest_list_is_bounded_and_sorted(
    settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """More slow statements than SLOWEST_KEPT: the list keeps the slowest, longest first."""
    configure(settings, SLOW_QUERY_THRESHOLD=1e-9)  # every statement is "slow"
    caplog.set_level(logging.WARNING, logger="mingus_sessions.slow_queries")
    enable_sqlite_sleep()
    statement, function = slow_statement(40)
    statements = 3 * SLOWEST_KEPT
    with session_scope() as session:
        for n in range(statements):
            session.execute(text("SELECT :n"), {"n": n})
        session.execute(text(statement), {"marker": MARKER})
    recorder = get_entry("main").probe
    assert isinstance(recorder, PoolRecorder)
    slowest = recorder.slowest()
    assert SLOWEST_KEPT == 20
    assert len(slowest) == SLOWEST_KEPT
    durations = [entry.duration_ms for entry in slowest]
    assert durations == sorted(durations, reverse=True)
    assert function in slowest[0].statement  # the sleep is the slowest of all
    assert slowest[0].duration_ms >= 38
    metrics = get_pool_metrics("main")
    assert metrics.slow_queries >= statements + 1  # every statement (BEGIN, COMMIT too)
    assert len(records(caplog, "mingus_sessions.slow_queries")) == metrics.slow_queries
    with session_scope() as session:
        for n in range(statements):
            session.execute(text("SELECT :n"), {"n": n})
    assert len(recorder.slowest()) == SLOWEST_KEPT
