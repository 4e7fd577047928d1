"""OpenTelemetry's database client conventions, emitted through its API.

Used when ``opentelemetry-api`` is installed (``mingus-sessions[otel]``) and
``OPENTELEMETRY`` leaves a signal on. Each pool's engine gets a
:class:`PoolTelemetry` when it is built (:func:`telemetry_for`, called by
``engines``): it times the connections' create, wait and use (told by the
pool's recorder), times and traces each statement (a wrapper around the
engine's dialect, as the slow-query timing does), and starts a span for each
scope that opens a session of its own (ended by ``_core.scopes.end_scope``).
The gauges (connections by state, maximums, pending requests, timeouts) are
observable instruments read from the pools' snapshots at collection time
(:mod:`mingus_sessions._otel_instruments`).

A signal whose provider is still OpenTelemetry's default (no SDK configured
when the engine is built) costs nothing: the engine gets no hook at all. So
configure the SDK before the first database use (at startup, as every
OpenTelemetry setup does); engines built before it pick it up when they are
rebuilt (a settings change, ``dispose_engines()``).

``OTEL_SEMCONV_STABILITY_OPT_IN``: this package emits the stable database
conventions; with ``database/dup`` in the list it also emits the experimental
ones of semantic conventions 1.24 (``db.system``, ``db.statement``,
``db.client.connections.*`` in milliseconds) for dashboards not yet moved.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Mapping
from time import perf_counter
from typing import Any

from sqlalchemy import Engine, event

from ._core.config import Config
from ._core.engine_args import EngineSpec
from ._core.frames import Frame, active_scope
from ._core.state import state

try:  # the optional dependency: everything below is inert without it
    from opentelemetry import context as otel_context
    from opentelemetry import metrics as otel_metrics
    from opentelemetry import trace as otel_trace
except ImportError:  # pragma: no cover - the suite installs the API
    otel_trace = None  # type: ignore[assignment]

__all__ = ["PoolTelemetry", "telemetry_for", "use_providers", "wants_old_conventions"]

logger = logging.getLogger("mingus_sessions")

#: The instrumentation scope that names this package in every signal.
SCOPE_NAME = "mingus_sessions"
#: The statement summaries (span names) each pool keeps, by statement text.
SUMMARIES_KEPT = 512

_DB_SYSTEMS = {
    "postgresql": "postgresql",
    "sqlite": "sqlite",
    "mysql": "mysql",
    "oracle": "oracle.db",
}
_OLD_DB_SYSTEMS = {"oracle.db": "oracle"}
_DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306, "mariadb": 3306, "oracle.db": 1521}

_FIRST_WORD = re.compile(r"\s*(?:(?:--[^\n]*\n|/\*.*?\*/)\s*)*([A-Za-z]+)", re.S)
_NAME = r"([\w$.\"`\[\]]+)"
_TARGETS = {
    "SELECT": re.compile(r"\bFROM\s+" + _NAME, re.I),
    "DELETE": re.compile(r"\bFROM\s+" + _NAME, re.I),
    "INSERT": re.compile(r"\bINTO\s+" + _NAME, re.I),
    "UPDATE": re.compile(r"^\s*UPDATE\s+" + _NAME, re.I),
}


def wants_old_conventions(environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``OTEL_SEMCONV_STABILITY_OPT_IN`` asks for the experimental conventions too.

    The stable conventions are always emitted (this package never emitted the
    experimental ones by default); ``database/dup`` adds those of 1.24.
    """
    opt_in = (environ if environ is not None else os.environ).get(
        "OTEL_SEMCONV_STABILITY_OPT_IN", ""
    )
    return "database/dup" in {part.strip() for part in opt_in.split(",")}


def use_providers(tracer_provider: Any = None, meter_provider: Any = None) -> None:
    """Emit through these providers instead of the global ones (``None``: the global one).

    For tests and for projects that keep their providers out of OpenTelemetry's
    globals. Engines built afterwards use them; call ``dispose_engines()`` to
    rebuild the others.
    """
    with state.lock:
        state.otel_providers = (
            None
            if tracer_provider is None and meter_provider is None
            else (tracer_provider, meter_provider)
        )


def _providers() -> tuple[Any, Any]:
    chosen = state.otel_providers
    tracer_provider = chosen[0] if chosen is not None else None
    meter_provider = chosen[1] if chosen is not None else None
    if tracer_provider is None:
        tracer_provider = otel_trace.get_tracer_provider()
    if meter_provider is None:
        meter_provider = otel_metrics.get_meter_provider()
    return tracer_provider, meter_provider


def _configured(provider: Any) -> bool:
    """Whether ``provider`` is one an SDK (or another implementation) set up, not the API's no-op.

    Until a provider is set, the API hands out a proxy that forwards to a
    no-op: instrumenting through it would cost calls on every statement and
    emit nothing. (The metrics proxy's class is private to the API: matched
    by name.)
    """
    if isinstance(provider, otel_trace.ProxyTracerProvider | otel_trace.NoOpTracerProvider):
        return False
    if isinstance(provider, otel_metrics.NoOpMeterProvider):
        return False
    return type(provider).__name__ not in ("_ProxyMeterProvider", "ProxyMeterProvider")


def telemetry_for(name: str, config: Config, spec: EngineSpec) -> PoolTelemetry | None:
    """The telemetry of pool ``name``'s engines, or ``None`` when nothing is to be emitted."""
    if otel_trace is None:
        return None
    wanted = config.opentelemetry
    if not (wanted.metrics or wanted.traces):
        return None
    tracer_provider, meter_provider = _providers()
    traces = wanted.traces and _configured(tracer_provider)
    metrics = wanted.metrics and _configured(meter_provider)
    if not (traces or metrics):
        return None
    old = wants_old_conventions()
    from ._otel_instruments import instruments_for

    return PoolTelemetry(
        name,
        spec,
        tracer=otel_trace.get_tracer(SCOPE_NAME, tracer_provider=tracer_provider)
        if traces
        else None,
        instruments=instruments_for(meter_provider, old=old) if metrics else None,
        log_parameters=config.log_query_parameters,
        old=old,
    )


class _ScopeSpan:
    """One scope's span (the core's ``ScopeTrace``); the parent of its statements' spans."""

    __slots__ = ("_context", "span")

    def __init__(self, span: Any) -> None:
        self.span = span
        self._context: Any = None

    @property
    def context(self) -> Any:
        found = self._context
        if found is None:
            found = self._context = otel_trace.set_span_in_context(self.span)
        return found

    def end(self, exc: BaseException | None) -> None:
        try:
            if exc is not None:
                _record_error(self.span, exc, _qualified(exc), log_parameters=False)
            self.span.end()
        except Exception:
            logger.debug("Ending a scope's span failed", exc_info=True)


def _qualified(exc: BaseException) -> str:
    """The exception's class with its module (``error.type``): ``sqlite3.OperationalError``."""
    cls = type(exc)
    return (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )


def _record_error(span: Any, exc: BaseException, error_type: str, *, log_parameters: bool) -> None:
    """Mark ``span`` as failed. A driver's message may quote row values (a duplicate key):
    without ``LOG_QUERY_PARAMETERS`` only its first line is kept."""
    message = str(exc)
    if not log_parameters:
        message = message.split("\n", 1)[0]
    span.set_attribute("error.type", error_type)
    span.set_status(otel_trace.Status(otel_trace.StatusCode.ERROR, message))
    span.record_exception(exc, attributes={"exception.message": message})


def _error_code(exc: BaseException) -> str | None:
    """The database's own code for a failure: SQLSTATE (PostgreSQL), the error number (MySQL)."""
    code = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)
    if code:
        return str(code)
    args = getattr(exc, "args", ())
    if (
        args
        and isinstance(args[0], int)
        and type(exc).__module__.split(".")[0]
        in (
            "MySQLdb",
            "pymysql",
            "aiomysql",
            "asyncmy",
        )
    ):
        return str(args[0])
    return None


def _parameter_attributes(parameters: Any) -> dict[str, Any]:
    """``db.query.parameter.<key>`` for each bound parameter (only with LOG_QUERY_PARAMETERS)."""
    if isinstance(parameters, Mapping):
        items: Any = parameters.items()
    elif isinstance(parameters, list | tuple):
        items = enumerate(parameters)
    else:
        return {}
    return {f"db.query.parameter.{key}": str(value) for key, value in items}


class _Statement:
    """What a statement's span and duration carry, worked out once per statement text."""

    __slots__ = ("metric_attributes", "name", "span_attributes")

    def __init__(
        self, name: str, span_attributes: dict[str, Any], metric_attributes: dict[str, Any]
    ):
        self.name = name
        self.span_attributes = span_attributes
        self.metric_attributes = metric_attributes


def summarize(statement: str) -> str | None:
    """A low-cardinality summary of a SQL statement (``db.query.summary``): ``SELECT orders``."""
    found = _FIRST_WORD.match(statement)
    if found is None:
        return None
    operation = found.group(1).upper()
    pattern = _TARGETS.get(operation)
    target = pattern.search(statement) if pattern is not None else None
    if target is None:
        return operation
    return f"{operation} {target.group(1)}"


class PoolTelemetry:
    """One pool's OpenTelemetry hooks: connection times, statements, and scope spans."""

    def __init__(
        self,
        name: str,
        spec: EngineSpec,
        *,
        tracer: Any,
        instruments: Any,
        log_parameters: bool,
        old: bool,
    ) -> None:
        self.name = name
        self.tracer = tracer
        self.instruments = instruments
        self.log_parameters = log_parameters
        self.old = old
        url = spec.url
        self._host = url.host
        self._port = url.port
        self._namespace = url.database
        self._statements: dict[str, _Statement] = {}
        self.system = _DB_SYSTEMS.get(spec.vendor, "other_sql")
        self._describe_pool()

    def _describe_pool(self) -> None:
        """The attributes every signal of this pool carries (again once the server is known)."""
        system = self.system
        server: dict[str, Any] = {"db.system.name": system}
        if self._namespace:
            server["db.namespace"] = self._namespace
        if self._host:
            server["server.address"] = self._host
            server["server.port"] = self._port or _DEFAULT_PORTS.get(system, 0)
        self.server = server
        self.pool_attributes = {
            "db.client.connection.pool.name": self.name,
            "db.system.name": system,
        }
        self.old_pool_attributes = {"pool.name": self.name}
        # Few on purpose: an SDK cleans each attribute of each span (the statements
        # carry the server's).
        self.scope_attributes = {
            "db.system.name": system,
            "db.client.connection.pool.name": self.name,
        }
        if self.old:
            self.scope_attributes["db.system"] = _OLD_DB_SYSTEMS.get(system, system)
        self._statements.clear()  # in place: the statement wrappers hold this dict

    def _old_server(self) -> dict[str, Any]:
        old: dict[str, Any] = {"db.system": _OLD_DB_SYSTEMS.get(self.system, self.system)}
        if self._namespace:
            old["db.name"] = self._namespace
        if self._host:
            old["net.peer.name"] = self._host
            old["net.peer.port"] = self.server["server.port"]
        return old

    # -- the engine ---------------------------------------------------------------------------

    def install(self, engine: Engine, *, vendor: str) -> None:
        """Hook ``engine`` (a pool's engine, or an async engine's sync side): statements, server."""
        if vendor == "mysql":
            # MySQL or MariaDB is known once the dialect met the server: its own
            # first-connect initialisation runs before this listener.
            def learn_server(dbapi_connection: Any, record: Any) -> None:
                if getattr(engine.dialect, "is_mariadb", False) and self.system != "mariadb":
                    self.system = "mariadb"
                    self._describe_pool()

            event.listen(engine, "connect", learn_server, once=True)
        self._wrap_statements(engine)

    def _describe(self, statement: str) -> _Statement:
        summary = summarize(statement)
        name = summary or self.system
        span_attributes: dict[str, Any] = {**self.server, "db.query.text": statement}
        metric_attributes = dict(self.server)
        if summary:
            span_attributes["db.query.summary"] = summary
            metric_attributes["db.query.summary"] = summary
        if self.old:
            span_attributes.update(self._old_server())
            span_attributes["db.statement"] = statement
            if summary:
                span_attributes["db.operation"] = summary.split(" ", 1)[0]
        if len(self._statements) >= SUMMARIES_KEPT:
            self._statements.clear()
        described = self._statements[statement] = _Statement(
            name[:255], span_attributes, metric_attributes
        )
        return described

    def _parent(self) -> Any:
        """The span of the innermost scope of this pool in this context, as a parent context."""
        name = self.name
        frame: Frame | None = active_scope.get()
        while frame is not None:
            trace = frame.trace
            if trace is not None and frame.pool == name:
                return trace.context  # type: ignore[attr-defined]
            frame = frame.parent
        return None

    def _wrap_statements(self, engine: Engine) -> None:
        """Time and trace each statement by wrapping ``engine``'s dialect's execute methods.

        As the slow-query timing does (``_core/slow_queries.py``): one call per
        statement, no event dispatch. A span is started only inside a trace: a
        traced scope of this pool in this context, or a current span (a
        statement outside any, such as a health check's ping, would otherwise
        start a trace of its own each time).
        """
        dialect: Any = engine.dialect
        duration = self.instruments.operation_duration if self.instruments is not None else None
        statements = self._statements
        describe = self._describe
        begin = self._begin if self.tracer is not None else None
        failed = self._failed

        def observed(method: Callable[..., None], *, many: bool) -> Callable[..., None]:
            def run_observed(cursor: Any, statement: str, parameters: Any, context: Any) -> None:
                described = statements.get(statement) or describe(statement)
                span = begin(described, parameters, many) if begin is not None else None
                started = perf_counter()
                try:
                    method(cursor, statement, parameters, context)
                except BaseException as exc:
                    failed(exc, perf_counter() - started, described, span)
                    raise
                if duration is not None:
                    duration.record(perf_counter() - started, described.metric_attributes)
                if span is not None:
                    span.end()

            return run_observed

        def run_observed_no_params(cursor: Any, statement: str, context: Any) -> None:
            described = statements.get(statement) or describe(statement)
            span = begin(described, None, False) if begin is not None else None
            started = perf_counter()
            try:
                execute_no_params(cursor, statement, context)
            except BaseException as exc:
                failed(exc, perf_counter() - started, described, span)
                raise
            if duration is not None:
                duration.record(perf_counter() - started, described.metric_attributes)
            if span is not None:
                span.end()

        execute_no_params = dialect.do_execute_no_params
        dialect.do_execute = observed(dialect.do_execute, many=False)
        dialect.do_executemany = observed(dialect.do_executemany, many=True)
        dialect.do_execute_no_params = run_observed_no_params

    def _begin(self, described: _Statement, parameters: Any, many: bool) -> Any:
        """The statement's span, under this context's trace; ``None`` outside any trace."""
        parent = self._parent()
        if parent is None:
            if not otel_trace.get_current_span().get_span_context().is_valid:
                return None
            parent = otel_context.get_current()
        attributes = described.span_attributes
        if parameters:
            if many:
                attributes = {**attributes, "db.operation.batch.size": len(parameters)}
            elif self.log_parameters:
                attributes = {**attributes, **_parameter_attributes(parameters)}
        return self.tracer.start_span(
            described.name, context=parent, kind=otel_trace.SpanKind.CLIENT, attributes=attributes
        )

    def _failed(self, exc: BaseException, elapsed: float, described: _Statement, span: Any) -> None:
        """A statement failed after ``elapsed`` s: its duration with ``error.type``, its span."""
        try:
            code = _error_code(exc)
            error_type = code or _qualified(exc)
            if self.instruments is not None:
                self.instruments.operation_duration.record(
                    elapsed, {**described.metric_attributes, "error.type": error_type}
                )
            if span is not None:
                if code:
                    span.set_attribute("db.response.status_code", code)
                _record_error(span, exc, error_type, log_parameters=self.log_parameters)
                span.end()
        except Exception:
            logger.debug("Recording a failed statement of pool %s failed", self.name, exc_info=True)

    # -- the scopes ---------------------------------------------------------------------------

    def start_trace(self) -> _ScopeSpan:
        """A span for a scope that opens a session of its own, under the current span."""
        return _ScopeSpan(
            self.tracer.start_span(
                f"transaction {self.name}",
                kind=otel_trace.SpanKind.INTERNAL,
                attributes=self.scope_attributes,
            )
        )

    # -- the connections (the core's PoolTelemetry) -------------------------------------------

    def connection_created(self, seconds: float) -> None:
        self.instruments.created(seconds, self)

    def connection_waited(self, seconds: float) -> None:
        self.instruments.waited(seconds, self)

    def connection_used(self, seconds: float) -> None:
        self.instruments.used(seconds, self)
