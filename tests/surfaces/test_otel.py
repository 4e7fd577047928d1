"""OpenTelemetry: the pool metrics, db.client.operation.duration and the spans, read back with the
SDK's in-memory metric reader and span exporter (providers of the test's own, not the globals)."""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.test import Client
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import Histogram, InMemoryMetricReader, Metric, Sum
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from sqlalchemy import text

from mingus_sessions import asession_scope, dispose_engines, session_scope
from mingus_sessions._core.state import state
from mingus_sessions.engines import get_entry
from mingus_sessions.otel import summarize, use_providers, wants_old_conventions
from tests.scopes.helpers import BACKEND, db

pytestmark = db

SYSTEM = {"sqlite": "sqlite", "postgresql": "postgresql", "mysql": None}[BACKEND]
BOUNDARIES = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0)


@dataclass
class Telemetry:
    reader: InMemoryMetricReader
    exporter: InMemorySpanExporter
    tracers: TracerProvider

    def metrics(self) -> dict[str, Metric]:
        found: dict[str, Metric] = {}
        data = self.reader.get_metrics_data()
        assert data is not None
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                if scope.scope.name == "mingus_sessions":
                    found.update({metric.name: metric for metric in scope.metrics})
        return found

    def points(self, name: str, pool: str = "main") -> list[Any]:
        metric = self.metrics().get(name)
        if metric is None:
            return []  # no observation at all
        return [
            point
            for point in metric.data.data_points
            if point.attributes.get("db.client.connection.pool.name", pool) == pool
            and point.attributes.get("pool.name", pool) == pool
        ]

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())


@pytest.fixture
def otel() -> Iterator[Telemetry]:
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    exporter = InMemorySpanExporter()
    tracers = TracerProvider()
    tracers.add_span_processor(SimpleSpanProcessor(exporter))
    use_providers(tracers, meters)
    dispose_engines()
    try:
        yield Telemetry(reader, exporter, tracers)
    finally:
        use_providers()
        dispose_engines()
        meters.shutdown()
        tracers.shutdown()


def configure(settings: Any, pools: dict[str, Any] | None = None, **top: Any) -> None:
    config = copy.deepcopy(django_settings.MINGUS_SESSIONS)
    config.update(top)
    if pools:
        for name, keys in pools.items():
            config["POOLS"][name].update(keys)
    settings.MINGUS_SESSIONS = config


def system_name() -> str:
    return SYSTEM or get_entry().telemetry.system


def test_the_nine_pool_metrics_have_the_conventions_names_kinds_units_and_values(
    otel: Telemetry,
) -> None:
    with session_scope() as session:
        session.execute(text("SELECT 1"))
        time.sleep(0.05)
    metrics = otel.metrics()
    expected = {
        "db.client.connection.count": (Sum, False, "{connection}"),
        "db.client.connection.idle.max": (Sum, False, "{connection}"),
        "db.client.connection.idle.min": (Sum, False, "{connection}"),
        "db.client.connection.max": (Sum, False, "{connection}"),
        "db.client.connection.pending_requests": (Sum, False, "{request}"),
        "db.client.connection.timeouts": (Sum, True, "{timeout}"),
        "db.client.connection.create_time": (Histogram, None, "s"),
        "db.client.connection.wait_time": (Histogram, None, "s"),
        "db.client.connection.use_time": (Histogram, None, "s"),
        "db.client.operation.duration": (Histogram, None, "s"),
    }
    for name, (kind, monotonic, unit) in expected.items():
        metric = metrics[name]
        assert isinstance(metric.data, kind), name
        assert metric.unit == unit, name
        if monotonic is not None:
            assert metric.data.is_monotonic is monotonic, name
    if BACKEND == "mysql":  # learnt from the server at the first connect
        assert system_name() == ("mariadb" if get_entry().engine.dialect.is_mariadb else "mysql")
    pool = {"db.client.connection.pool.name": "main", "db.system.name": system_name()}
    counts = {
        point.attributes["db.client.connection.state"]: point.value
        for point in otel.points("db.client.connection.count")
    }
    assert counts == {"used": 0, "idle": 1}
    for point in otel.points("db.client.connection.count"):
        assert {k: v for k, v in point.attributes.items() if k in pool} == pool
    values = {
        name: [point.value for point in otel.points(f"db.client.connection.{name}")]
        for name in ("idle.max", "idle.min", "max", "pending_requests", "timeouts")
    }
    assert values == {
        "idle.max": [5],
        "idle.min": [0],
        "max": [10],
        "pending_requests": [0],
        "timeouts": [0],
    }
    (use,) = otel.points("db.client.connection.use_time")
    assert dict(use.attributes) == pool
    assert use.count == 1
    # A 50 ms hold shows as about 0.05 s.
    assert 0.045 <= use.sum <= 0.09
    assert tuple(use.explicit_bounds) == BOUNDARIES
    (wait,) = otel.points("db.client.connection.wait_time")
    assert wait.count == 1
    assert 0 <= wait.sum < 0.05
    (create,) = otel.points("db.client.connection.create_time")
    assert create.count == 1
    assert create.sum > 0


def test_a_pool_waiting_and_timing_out_shows_in_pending_requests_and_timeouts(
    otel: Telemetry, settings: Any
) -> None:
    from mingus_sessions import PoolExhaustedError

    configure(settings, {"other": {"POOL_TIMEOUT": 0.2, "POOL_SIZE": 1}})
    with session_scope("other") as held:
        held.execute(text("SELECT 1"))
        with pytest.raises(PoolExhaustedError), session_scope("other", independent=True) as second:
            second.execute(text("SELECT 1"))
        counts = {
            point.attributes["db.client.connection.state"]: point.value
            for point in otel.points("db.client.connection.count", "other")
        }
        assert counts == {"used": 1, "idle": 0}
    time.sleep(0.6)  # past the gauges' snapshot
    assert [point.value for point in otel.points("db.client.connection.timeouts", "other")] == [1]
    assert [point.value for point in otel.points("db.client.connection.max", "other")] == [1]


def test_statements_are_spans_under_their_scope_span_with_the_conventions_attributes(
    otel: Telemetry,
) -> None:
    with session_scope() as session:
        session.execute(text("SELECT title FROM testapp_note WHERE title = :t"), {"t": "secret"})
    spans = otel.spans()
    (scope,) = [span for span in spans if span.name == "transaction main"]
    statements = [
        span for span in spans if span.parent and span.parent.span_id == scope.context.span_id
    ]
    select = next(span for span in statements if span.name == "SELECT testapp_note")
    assert select.kind is SpanKind.CLIENT
    assert scope.kind is SpanKind.INTERNAL
    assert select.context.trace_id == scope.context.trace_id
    attributes = dict(select.attributes or {})
    assert attributes["db.system.name"] == system_name()
    assert attributes["db.query.summary"] == "SELECT testapp_note"
    assert "testapp_note" in attributes["db.query.text"]
    if BACKEND != "sqlite":
        assert attributes["server.address"] == "127.0.0.1"
        assert isinstance(attributes["server.port"], int)
        assert attributes["db.namespace"].endswith("mingus")
    # No bound parameter anywhere unless LOG_QUERY_PARAMETERS.
    for span in spans:
        assert "secret" not in repr(dict(span.attributes or {}))
    assert not any(key.startswith("db.query.parameter.") for key in attributes)
    assert dict(scope.attributes or {})["db.client.connection.pool.name"] == "main"
    assert scope.status.status_code is StatusCode.UNSET
    (duration,) = [
        point
        for point in otel.points("db.client.operation.duration")
        if point.attributes.get("db.query.summary") == "SELECT testapp_note"
    ]
    assert duration.count == 1
    assert tuple(duration.explicit_bounds) == BOUNDARIES
    assert duration.attributes["db.system.name"] == system_name()
    assert "error.type" not in duration.attributes
    assert "db.query.text" not in duration.attributes


def test_bound_parameters_reach_spans_only_with_log_query_parameters(
    otel: Telemetry, settings: Any
) -> None:
    configure(settings, LOG_QUERY_PARAMETERS=True)
    with session_scope() as session:
        session.execute(text("SELECT title FROM testapp_note WHERE title = :t"), {"t": "shown"})
    (select,) = [span for span in otel.spans() if span.name == "SELECT testapp_note"]
    parameters = {
        key: value
        for key, value in (select.attributes or {}).items()
        if key.startswith("db.query.parameter.")
    }
    assert list(parameters.values()) == ["shown"]


def test_a_failed_statement_is_recorded_on_its_span_its_scope_and_its_duration(
    otel: Telemetry,
) -> None:
    with pytest.raises(Exception, match="no_such_table"), session_scope() as session:
        session.execute(text("SELECT * FROM no_such_table"))
    spans = otel.spans()
    (failed,) = [span for span in spans if span.name == "SELECT no_such_table"]
    assert failed.status.status_code is StatusCode.ERROR
    error_type = failed.attributes["error.type"]
    if BACKEND == "postgresql":
        assert error_type == "42P01"  # undefined_table
        assert failed.attributes["db.response.status_code"] == "42P01"
    elif BACKEND == "sqlite":
        assert error_type == "sqlite3.OperationalError"
    assert [event.name for event in failed.events] == ["exception"]
    (scope,) = [span for span in spans if span.name == "transaction main"]
    assert scope.status.status_code is StatusCode.ERROR
    # The scope ended with SQLAlchemy's error (a data error is not translated).
    assert scope.attributes["error.type"] == "sqlalchemy.exc.OperationalError" or (
        scope.attributes["error.type"] == "sqlalchemy.exc.ProgrammingError"
    )
    (duration,) = [
        point
        for point in otel.points("db.client.operation.duration")
        if point.attributes.get("db.query.summary") == "SELECT no_such_table"
    ]
    assert duration.attributes["error.type"] == error_type


def test_a_null_pool_reports_the_connections_it_opens_and_their_create_time(
    otel: Telemetry, settings: Any
) -> None:
    """PgBouncer users' pools (POOL_CLASS "null") open a connection per checkout: counted."""
    configure(settings, {"main": {"POOL_CLASS": "null"}})
    for _ in range(3):
        with session_scope() as session:
            session.execute(text("SELECT 1"))
            counts = {
                point.attributes["db.client.connection.state"]: point.value
                for point in otel.points("db.client.connection.count")
            }
            assert counts["used"] == 1
            time.sleep(0.6)  # past the gauges' snapshot
    (create,) = otel.points("db.client.connection.create_time")
    assert create.count == 3
    assert create.sum > 0
    (use,) = otel.points("db.client.connection.use_time")
    assert use.count == 3
    # No limit of its own: no maximum, no idle connection kept.
    assert otel.points("db.client.connection.max") == []
    assert [point.value for point in otel.points("db.client.connection.idle.max")] == [0]


@pytest.mark.asyncio
async def test_async_scopes_report_the_same_way(otel: Telemetry) -> None:
    async with asession_scope() as session:
        await session.execute(text("SELECT count(*) FROM testapp_note"))
        await asyncio.sleep(0.05)
    spans = otel.spans()
    (scope,) = [span for span in spans if span.name == "transaction main"]
    (select,) = [span for span in spans if span.name == "SELECT testapp_note"]
    assert select.parent is not None
    assert select.parent.span_id == scope.context.span_id
    (use,) = otel.points("db.client.connection.use_time")
    assert use.count == 1
    assert 0.045 <= use.sum <= 0.09
    counts = {
        point.attributes["db.client.connection.state"]: point.value
        for point in otel.points("db.client.connection.count")
    }
    assert counts == {"used": 0, "idle": 1}
    # The pool's sync engine and this loop's async one: twice the limits.
    assert [point.value for point in otel.points("db.client.connection.max")] == [20]
    assert [point.value for point in otel.points("db.client.connection.idle.max")] == [10]


def test_a_requests_scope_is_a_child_of_the_requests_span(otel: Telemetry) -> None:
    """As under opentelemetry-instrumentation-django, whose middleware makes the request's span
    current while the view runs: here the test makes one current around the request."""
    tracer = otel.tracers.get_tracer("test")
    with tracer.start_as_current_span("GET /write/<title>/") as request_span:
        response = Client().get("/write/traced/")
    assert response.status_code == 200
    spans = otel.spans()
    (scope,) = [span for span in spans if span.name == "transaction main"]
    assert scope.parent is not None
    assert scope.parent.span_id == request_span.get_span_context().span_id
    (insert,) = [span for span in spans if span.name == "INSERT testapp_note"]
    assert insert.parent.span_id == scope.context.span_id


def test_statements_outside_any_trace_start_no_span(otel: Telemetry) -> None:
    from mingus_sessions import get_engine

    with get_engine().connect() as connection:
        connection.execute(text("SELECT count(*) FROM testapp_note"))
    assert otel.spans() == []
    (duration,) = [
        point
        for point in otel.points("db.client.operation.duration")
        if point.attributes.get("db.query.summary") == "SELECT testapp_note"
    ]
    assert duration.count == 1


def test_opentelemetry_off_or_without_an_sdk_gives_the_engines_no_hook(
    otel: Telemetry, settings: Any
) -> None:
    configure(settings, OPENTELEMETRY=False)
    with session_scope() as session:
        session.execute(text("SELECT 1"))
    assert get_entry().telemetry is None
    assert get_entry().start_trace is None
    assert otel.spans() == []
    configure(settings, OPENTELEMETRY={"METRICS": True, "TRACES": False})
    with session_scope() as session:
        session.execute(text("SELECT 1"))
    assert otel.spans() == []
    assert otel.points("db.client.operation.duration")
    # The API alone (no SDK: OpenTelemetry's default providers): nothing is hooked at all.
    configure(settings, OPENTELEMETRY=True)
    use_providers()
    with session_scope() as session:
        session.execute(text("SELECT 1"))
    assert get_entry().telemetry is None
    assert state.pools["main"].probe.telemetry is None  # type: ignore[attr-defined]


def test_database_dup_also_emits_the_experimental_conventions(
    otel: Telemetry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "http,database/dup")
    dispose_engines()
    with session_scope() as session:
        session.execute(text("SELECT count(*) FROM testapp_note"))
        time.sleep(0.02)
    metrics = otel.metrics()
    assert metrics["db.client.connections.use_time"].unit == "ms"
    (old_use,) = otel.points("db.client.connections.use_time")
    assert dict(old_use.attributes) == {"pool.name": "main"}
    assert 15 <= old_use.sum <= 60
    usage = {
        point.attributes["state"]: point.value
        for point in otel.points("db.client.connections.usage")
    }
    assert usage == {"used": 0, "idle": 1}
    assert "db.client.connection.count" in metrics  # the stable ones too
    (select,) = [span for span in otel.spans() if span.name == "SELECT testapp_note"]
    attributes = dict(select.attributes or {})
    assert attributes["db.operation"] == "SELECT"
    assert attributes["db.statement"] == attributes["db.query.text"]
    assert attributes["db.system"] == attributes["db.system.name"]


def test_the_opt_in_variable_is_read_as_a_comma_separated_list() -> None:
    assert wants_old_conventions({}) is False
    assert wants_old_conventions({"OTEL_SEMCONV_STABILITY_OPT_IN": "database"}) is False
    assert wants_old_conventions({"OTEL_SEMCONV_STABILITY_OPT_IN": "http, database/dup"}) is True
    assert wants_old_conventions({"OTEL_SEMCONV_STABILITY_OPT_IN": "database,database/dup"})


@pytest.mark.parametrize(
    ("statement", "summary"),
    [
        ("SELECT 1", "SELECT"),
        ("select a, b from orders where x = ?", "SELECT orders"),
        ("/* hint */ INSERT INTO public.notes (a) VALUES (%(a)s)", "INSERT public.notes"),
        ("UPDATE notes SET a = 1", "UPDATE notes"),
        ("DELETE FROM notes WHERE id = 1", "DELETE notes"),
        ("SAVEPOINT sa_savepoint_1", "SAVEPOINT"),
        ("  \n", None),
    ],
)
def test_statements_are_summarized_by_operation_and_table(statement: str, summary: str) -> None:
    assert summarize(statement) == summary


def test_batches_statements_without_parameters_and_statements_under_a_current_span(
    otel: Telemetry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An executemany carries its batch size; a statement run without parameters and one run
    outside any scope but under a current span are traced as well."""
    from mingus_sessions import get_engine
    from mingus_sessions import otel as otel_module

    monkeypatch.setattr(otel_module, "SUMMARIES_KEPT", 2)
    with session_scope() as session:
        session.execute(
            text("INSERT INTO testapp_note (title, body) VALUES (:title, '')"),
            [{"title": "one"}, {"title": "two"}, {"title": "three"}],
        )
        connection = session.connection().execution_options(no_parameters=True)
        connection.exec_driver_sql("SELECT count(*) FROM testapp_note")
    tracer = otel.tracers.get_tracer("test")
    with tracer.start_as_current_span("job") as job, get_engine().connect() as raw:
        raw.execute(text("DELETE FROM testapp_note WHERE title = :t"), {"t": "one"})
        raw.commit()
    spans = otel.spans()
    (insert,) = [span for span in spans if span.name == "INSERT testapp_note"]
    assert insert.attributes["db.operation.batch.size"] == 3
    (count,) = [
        span
        for span in spans
        if span.name == "SELECT testapp_note" and "count(*)" in span.attributes["db.query.text"]
    ]
    assert count.parent is not None
    assert count.parent.span_id == insert.parent.span_id  # the scope's
    (delete,) = [span for span in spans if span.name == "DELETE testapp_note"]
    assert delete.parent.span_id == job.get_span_context().span_id
    # More statements than the summaries kept: the cache started over, and stayed small.
    assert len(get_entry().telemetry._statements) <= 2
