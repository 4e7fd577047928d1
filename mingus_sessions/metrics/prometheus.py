"""Prometheus text exposition of every pool and session metric; no dependency.

Names follow OpenTelemetry's ``db.client.connection.*`` where one exists
(``db_client_connection_count{state="used"|"idle"}``, ``..._max``,
``..._pending_requests``, ``..._timeouts_total`` and the wait, use and create
times as summaries in seconds); the rest are ``mingus_sessions_*``. Every pool
metric carries the label ``pool``.
"""

from __future__ import annotations

from collections.abc import Iterable

from .._core.histogram import Percentiles
from .._core.snapshot import PoolMetrics
from .._core.state import state

__all__ = ["CONTENT_TYPE", "render_prometheus"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_CIRCUIT = {"closed": 0, "half_open": 1, "open": 2}


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, value: float, **labels: str) -> None:
        if labels:
            rendered = ",".join(f'{key}="{_escape(val)}"' for key, val in labels.items())
            self.lines.append(f"{name}{{{rendered}}} {_number(value)}")
        else:
            self.lines.append(f"{name} {_number(value)}")

    def summary(
        self, name: str, help_text: str, pools: Iterable[tuple[str, Percentiles, float]]
    ) -> None:
        """A summary in seconds from millisecond percentiles and a millisecond sum."""
        self.family(name, "summary", help_text)
        for pool, found, total_ms in pools:
            for quantile, value in (("0.5", found.p50), ("0.95", found.p95), ("0.99", found.p99)):
                self.sample(name, value / 1000.0, pool=pool, quantile=quantile)
            self.sample(f"{name}_sum", total_ms / 1000.0, pool=pool)
            self.sample(f"{name}_count", found.count, pool=pool)


def render_prometheus(
    pools: dict[str, PoolMetrics] | None = None,
    sums_ms: dict[str, tuple[float, float, float]] | None = None,
) -> str:
    """The exposition text for ``pools`` (all pools by default).

    ``sums_ms`` gives, per pool, the total wait, use and create times in ms (the
    summaries' ``_sum``); read from the pools' recorders when not given.
    """
    if pools is None:
        from .api import get_pool_metrics

        pools = get_pool_metrics()
    if sums_ms is None:
        sums_ms = _sums(pools)
    out = _Writer()
    ordered = sorted(pools.items())
    _connection_gauges(out, ordered)
    _connection_times(out, ordered, sums_ms)
    _pool_figures(out, ordered)
    _session_counters(out)
    return "\n".join(out.lines) + "\n"


def _connection_gauges(out: _Writer, ordered: list[tuple[str, PoolMetrics]]) -> None:
    """OpenTelemetry's connection count, maximum, pending requests and timeouts."""
    out.family(
        "db_client_connection_count",
        "gauge",
        "Connections open in the pool, by state (used: checked out, idle: in the pool).",
    )
    for name, m in ordered:
        out.sample("db_client_connection_count", m.checked_out, pool=name, state="used")
        out.sample("db_client_connection_count", m.checked_in, pool=name, state="idle")
    out.family(
        "db_client_connection_max",
        "gauge",
        "Most connections the pool may open (pool size + max overflow).",
    )
    for name, m in ordered:
        if m.capacity:  # a pool class without a limit has no maximum to report
            out.sample("db_client_connection_max", m.capacity, pool=name)
    out.family(
        "db_client_connection_pending_requests",
        "gauge",
        "Callers waiting for a connection right now.",
    )
    for name, m in ordered:
        out.sample("db_client_connection_pending_requests", m.waiting, pool=name)
    out.family(
        "db_client_connection_timeouts_total",
        "counter",
        "Checkouts that gave up after the pool timeout.",
    )
    for name, m in ordered:
        out.sample("db_client_connection_timeouts_total", m.timeouts, pool=name)


def _connection_times(
    out: _Writer,
    ordered: list[tuple[str, PoolMetrics]],
    sums_ms: dict[str, tuple[float, float, float]],
) -> None:
    """OpenTelemetry's wait, use and create times, as summaries in seconds."""
    zero = (0.0, 0.0, 0.0)
    out.summary(
        "db_client_connection_wait_time_seconds",
        "Time spent waiting to check a connection out.",
        ((n, m.acquire_wait_ms, sums_ms.get(n, zero)[0]) for n, m in ordered),
    )
    out.summary(
        "db_client_connection_use_time_seconds",
        "Time a connection stayed checked out.",
        ((n, m.hold_ms, sums_ms.get(n, zero)[1]) for n, m in ordered),
    )
    out.summary(
        "db_client_connection_create_time_seconds",
        "Time taken to open a new connection.",
        ((n, m.connect_ms, sums_ms.get(n, zero)[2]) for n, m in ordered),
    )


def _pool_figures(out: _Writer, ordered: list[tuple[str, PoolMetrics]]) -> None:
    """The pool's settings, gauges and counters of our own, and its circuit breaker's state."""
    for field, kind, help_text in (
        ("pool_size", "gauge", "Configured pool size."),
        ("max_overflow", "gauge", "Configured maximum overflow."),
        ("overflow", "gauge", "Overflow connections open right now."),
        ("utilization", "gauge", "Checked out / capacity, 0..1."),
        ("peak_checked_out", "gauge", "Most connections checked out at once since the reset."),
        ("connects", "counter", "Connections opened."),
        ("connect_errors", "counter", "Failed attempts to open a connection."),
        ("checkouts", "counter", "Connections checked out."),
        ("invalidations", "counter", "Connections invalidated (disconnects, failed rollbacks)."),
        ("leaks", "counter", "Connections held past LEAK_THRESHOLD."),
        ("slow_queries", "counter", "Statements slower than SLOW_QUERY_THRESHOLD."),
    ):
        metric = f"mingus_sessions_pool_{field}" + ("_total" if kind == "counter" else "")
        out.family(metric, kind, help_text)
        for name, m in ordered:
            out.sample(metric, getattr(m, field), pool=name)
    out.family(
        "mingus_sessions_circuit_state",
        "gauge",
        "Circuit breaker state: 0 closed, 1 half open, 2 open.",
    )
    for name, m in ordered:
        out.sample("mingus_sessions_circuit_state", _CIRCUIT.get(m.circuit_state, 0), pool=name)


def _session_counters(out: _Writer) -> None:
    """The process's scopes, transactions, rollbacks, savepoints and retries (no pool label)."""
    stats = state.sessions.snapshot()
    for key, metric, kind, help_text in (
        ("total_sessions", "mingus_sessions_sessions_total", "counter", "Sessions opened."),
        ("active_sessions", "mingus_sessions_sessions_active", "gauge", "Sessions open now."),
        (
            "committed_transactions",
            "mingus_sessions_transactions_committed_total",
            "counter",
            "Transactions committed.",
        ),
        (
            "transaction_rollbacks",
            "mingus_sessions_rollbacks_total",
            "counter",
            "Rollbacks, whatever the cause (savepoints included).",
        ),
        (
            "failed_sessions",
            "mingus_sessions_sessions_failed_total",
            "counter",
            "Scopes that ended with an exception.",
        ),
        ("savepoints", "mingus_sessions_savepoints_total", "counter", "Savepoints opened."),
        ("retries", "mingus_sessions_retries_total", "counter", "Retries of transient failures."),
    ):
        out.family(metric, kind, help_text)
        out.sample(metric, stats[key])


def _sums(pools: dict[str, PoolMetrics]) -> dict[str, tuple[float, float, float]]:
    from .._core.recorder import PoolRecorder
    from ..engines import get_entry

    sums: dict[str, tuple[float, float, float]] = {}
    for name in pools:
        probe = get_entry(name).probe
        if isinstance(probe, PoolRecorder) and probe.acquire is not None:
            sums[name] = (
                probe.acquire.sum_us / 1000.0,
                probe.hold.sum_us / 1000.0,
                probe.connect_time.sum_us / 1000.0,
            )
    return sums
