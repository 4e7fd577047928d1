"""How many Python calls a ``session_scope()`` makes, against a hand-written session.

Counted with ``sys.setprofile``, so a change that adds work to every scope
shows here without timing noise. The benchmark (``bench/bench_suite.py``)
holds the absolute figure on PostgreSQL with metrics on; this test holds the
overhead over SQLAlchemy on whatever database the suite runs.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session
from sqlalchemy.pool import QueuePool

from mingus_sessions import session_scope
from mingus_sessions._core.pools import WaitAwareQueuePool
from mingus_sessions._core.state import state
from mingus_sessions.engines import get_entry

SELECT_1 = text("SELECT 1")
SCOPES = 50

#: Python calls a scope may add to a hand-written session on a plain engine. Measured:
#: 12 with metrics off, 19 with them on (PostgreSQL and MariaDB). On SQLite our
#: engine emits BEGIN itself from a ``begin`` listener (so that SAVEPOINT works),
#: which puts every statement on SQLAlchemy's event-dispatching path: 96 and 104.
#: An engine listener added by mistake elsewhere costs about 50 (it did once).
EXTRA_CALLS_BUDGET = {"sqlite": 115}
DEFAULT_EXTRA_CALLS_BUDGET = 30


def python_calls_per_scope(run_scope: Callable[[], None]) -> float:
    for _ in range(5):  # warm: engines built, statements compiled and cached
        run_scope()
    calls = 0

    def profiler(frame: Any, event: str, arg: Any) -> None:
        nonlocal calls
        if event == "call":
            calls += 1

    sys.setprofile(profiler)
    try:
        for _ in range(SCOPES):
            run_scope()
    finally:
        sys.setprofile(None)
    return calls / SCOPES


def ours() -> None:
    with session_scope() as session:
        session.execute(SELECT_1)


def plain_engine() -> Any:
    """The pool's engine as SQLAlchemy alone builds it: same URL and pool, none of our listeners."""
    spec = get_entry().spec
    kwargs = dict(spec.kwargs)
    if kwargs.get("poolclass") is WaitAwareQueuePool:
        kwargs["poolclass"] = QueuePool
        del kwargs["max_waiting"]
        # What our pool checks itself, SQLAlchemy's does with its ping.
        kwargs["pool_pre_ping"] = bool(kwargs.pop("checkout_checks").pre_ping)
    return create_engine(spec.url, **kwargs)


def hand_written(engine: Any) -> None:
    session = Session(engine)
    try:
        session.execute(SELECT_1)
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("monitoring", [False, True], ids=["metrics-off", "metrics-on"])
def test_a_scope_costs_few_python_calls_more_than_a_hand_written_session(
    settings: Any, monkeypatch: pytest.MonkeyPatch, monitoring: bool
) -> None:
    # Engines as production builds them: without the pytest plugin's guard,
    # which asks Django's test machinery before every checkout. The settings
    # change below rebuilds the engines.
    monkeypatch.setattr(state, "connect_guard", None)
    settings.MINGUS_SESSIONS = {**copy.deepcopy(settings.MINGUS_SESSIONS), "MONITORING": monitoring}
    engine = plain_engine()
    try:
        theirs = python_calls_per_scope(lambda: hand_written(engine))
    finally:
        engine.dispose()
    mine = python_calls_per_scope(ours)
    budget = EXTRA_CALLS_BUDGET.get(get_entry().spec.vendor, DEFAULT_EXTRA_CALLS_BUDGET)
    assert mine - theirs <= budget, (
        f"a scope makes {mine:.0f} Python calls, {mine - theirs:.0f} more than a hand-written "
        f"session on a plain engine ({theirs:.0f}); the budget is {budget}"
    )


@pytest.mark.django_db(transaction=True)
def test_a_shared_breaker_read_recently_costs_a_scope_no_python_call(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CIRCUIT_BREAKER["SHARED"]: between two reads of the fleet cache (one a second), a scope
    makes exactly the calls it makes with a breaker of its own."""
    from mingus_sessions._core import shared_breaker
    from mingus_sessions.breakers import get_circuit_breaker
    from mingus_sessions.fleet_breaker import FleetBreakerState

    monkeypatch.setattr(state, "connect_guard", None)
    # The read at the first scope is the last one the measurement sees.
    monkeypatch.setattr(shared_breaker, "READ_INTERVAL", 3600.0)
    reads: list[str] = []
    monkeypatch.setattr(FleetBreakerState, "read", lambda self, name: reads.append(name))
    base = copy.deepcopy(settings.MINGUS_SESSIONS)
    measured = {}
    for shared in (False, True):
        settings.MINGUS_SESSIONS = {
            **base,
            "MONITORING": False,
            "CIRCUIT_BREAKER": {**base["CIRCUIT_BREAKER"], "SHARED": shared},
        }
        measured[shared] = python_calls_per_scope(ours)
        assert isinstance(get_circuit_breaker(), shared_breaker.SharedCircuitBreaker) is shared
    assert reads == ["main"]
    # Averages over SCOPES: one call more per scope is a difference of 1.0; less than that
    # is noise of the server's (a pool's ping once in the run) that each measure may catch.
    assert measured[True] - measured[False] < 1, measured


@pytest.mark.django_db(transaction=True)
def test_opentelemetry_without_an_sdk_costs_a_scope_no_python_call(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the API installed but no SDK (OpenTelemetry's default providers), a scope makes
    exactly the calls it makes with OPENTELEMETRY off: the engines get no hook."""
    from mingus_sessions.otel import use_providers

    monkeypatch.setattr(state, "connect_guard", None)
    use_providers()
    base = copy.deepcopy(settings.MINGUS_SESSIONS)
    measured: dict[bool, float] = {}
    for on in (False, True) * 3:
        settings.MINGUS_SESSIONS = {**base, "OPENTELEMETRY": on}
        # The least of three: a pool's ping (past PING_IDLE) or a collection's callback in
        # one measure is noise, not the scope's work.
        measured[on] = min(measured.get(on, float("inf")), python_calls_per_scope(ours))
    assert abs(measured[True] - measured[False]) < 1, measured


#: Python calls of mingus_sessions.otel (and its instruments) per scope of one statement,
#: with an SDK: the scope's span (start, end), the statement's (wrapper, parent lookup,
#: its context), the operation's duration, and the wait and use times. Measured: 11 on
#: PostgreSQL, 15 on SQLite (whose BEGIN is a statement of its own, with its span).
OTEL_CALLS_BUDGET = {"sqlite": 17}
DEFAULT_OTEL_CALLS_BUDGET = 13


@pytest.mark.django_db(transaction=True)
def test_opentelemetry_with_an_sdk_costs_a_scope_few_calls_of_ours(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With an SDK, our own part of a traced and measured scope stays a handful of calls
    (what the SDK does with them is the SDK's: bench/ measures the whole)."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider

    from mingus_sessions import dispose_engines
    from mingus_sessions.otel import use_providers

    monkeypatch.setattr(state, "connect_guard", None)
    meters = MeterProvider(metric_readers=[InMemoryMetricReader()])
    tracers = TracerProvider()
    use_providers(tracers, meters)
    dispose_engines()
    ours_files = ("mingus_sessions/otel.py", "mingus_sessions/_otel_instruments.py")
    try:
        for _ in range(5):
            ours()
        calls = 0

        def profiler(frame: Any, event: str, arg: Any) -> None:
            nonlocal calls
            if event == "call" and frame.f_code.co_filename.endswith(ours_files):
                calls += 1

        sys.setprofile(profiler)
        try:
            for _ in range(SCOPES):
                ours()
        finally:
            sys.setprofile(None)
        assert get_entry().start_trace is not None
        budget = OTEL_CALLS_BUDGET.get(get_entry().spec.vendor, DEFAULT_OTEL_CALLS_BUDGET)
    finally:
        use_providers()
        dispose_engines()
        meters.shutdown()
        tracers.shutdown()
    per_scope = calls / SCOPES
    assert 0 < per_scope <= budget, per_scope
