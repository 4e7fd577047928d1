"""Prometheus text exposition of processes' pool and session metrics; no dependency.

Names follow OpenTelemetry's ``db.client.connection.*`` where one exists
(``db_client_connection_count{state="used"|"idle"}``, ``..._max``,
``..._pending_requests``, ``..._timeouts_total`` and the wait, use and create
times as histograms in seconds, on OpenTelemetry's advisory bucket boundaries);
the rest are ``mingus_sessions_*``. Every series carries the labels ``host`` and
``pid`` of the process it describes, and every pool series the label ``pool``,
so that one scrape can export every process of the fleet and the histograms add
up across them (``sum by (le) (rate(..._bucket[5m]))``). Values are written
exactly: counts as integers, times from whole microseconds, ratios rounded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from .._core.histogram import FIXED_BOUNDS_US

__all__ = ["CONTENT_TYPE", "render_prometheus"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_CIRCUIT = {"closed": 0, "half_open": 1, "open": 2}
_Labels = dict[str, str]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _seconds(micros: int) -> str:
    """``micros`` µs as seconds, written exactly (no binary float in between)."""
    sign = "-" if micros < 0 else ""
    whole, fraction = divmod(abs(int(micros)), 1_000_000)
    text = f"{whole}.{fraction:06d}".rstrip("0").rstrip(".")
    return sign + text


def _bound(micros: int) -> str:
    """A bucket bound in seconds as Prometheus' clients write ``le``: ``0.005``, ``1.0``."""
    text = _seconds(micros)
    return text if "." in text else text + ".0"


_BOUNDS = [(_bound(us), index) for index, us in enumerate(FIXED_BOUNDS_US)]


def _number(value: float) -> str:
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    return repr(round(float(value), 6))  # no float noise such as 0.30000000000000004


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, value: float | str, labels: _Labels) -> None:
        rendered = ",".join(f'{key}="{_escape(val)}"' for key, val in labels.items())
        shown = value if isinstance(value, str) else _number(value)
        self.lines.append(f"{name}{{{rendered}}} {shown}")


def render_prometheus(processes: Iterable[dict[str, Any]] | None = None) -> str:
    """The exposition text of ``processes`` (``get_fleet_metrics()`` dicts).

    Without ``processes``, this process alone, read now; ``metrics/database/prometheus``
    passes every live process of the fleet.
    """
    if processes is None:
        from .. import fleet, monitor

        running = monitor.sampler()
        processes = [fleet.local_snapshot(running.role if running is not None else "process")]
    ordered = sorted(processes, key=lambda p: (str(p["host"]), int(p["pid"])))
    out = _Writer()
    _process_info(out, ordered)
    pools = [
        (_process_labels(p), name, m)
        for p in ordered
        for name, m in sorted(p.get("pools", {}).items())
    ]
    _connection_gauges(out, pools)
    _connection_times(out, ordered)
    _pool_figures(out, pools)
    _session_counters(out, ordered)
    return "\n".join(out.lines) + "\n"


def _process_labels(process: dict[str, Any]) -> _Labels:
    return {"host": str(process["host"]), "pid": str(process["pid"])}


def _process_info(out: _Writer, processes: list[dict[str, Any]]) -> None:
    out.family(
        "mingus_sessions_process_info",
        "gauge",
        "A process of the fleet (always 1), with its role: web, worker, process, command.",
    )
    for process in processes:
        labels = {**_process_labels(process), "role": str(process.get("role", ""))}
        out.sample("mingus_sessions_process_info", 1, labels)


_PoolRows = list[tuple[_Labels, str, dict[str, Any]]]


def _each_pool(
    out: _Writer, rows: _PoolRows, metric: str, value: Callable[[dict[str, Any]], float]
) -> None:
    for labels, name, m in rows:
        out.sample(metric, value(m), {**labels, "pool": name})


def _connection_gauges(out: _Writer, rows: _PoolRows) -> None:
    """OpenTelemetry's connection count, maximum, pending requests and timeouts."""
    out.family(
        "db_client_connection_count",
        "gauge",
        "Connections open in the pool, by state (used: checked out, idle: in the pool).",
    )
    for labels, name, m in rows:
        pool = {**labels, "pool": name}
        out.sample("db_client_connection_count", m["checked_out"], {**pool, "state": "used"})
        out.sample("db_client_connection_count", m["checked_in"], {**pool, "state": "idle"})
    out.family(
        "db_client_connection_max",
        "gauge",
        "Most connections the pool may open (pool size + max overflow).",
    )
    # A pool class without a limit (capacity 0) has no maximum to report.
    _each_pool(
        out, [r for r in rows if r[2]["capacity"]], "db_client_connection_max", _get("capacity")
    )
    out.family(
        "db_client_connection_pending_requests",
        "gauge",
        "Callers waiting for a connection right now.",
    )
    _each_pool(out, rows, "db_client_connection_pending_requests", _get("waiting"))
    out.family(
        "db_client_connection_timeouts_total",
        "counter",
        "Checkouts that gave up after the pool timeout.",
    )
    _each_pool(out, rows, "db_client_connection_timeouts_total", _get("timeouts"))


def _get(key: str) -> Callable[[dict[str, Any]], float]:
    return lambda metrics: metrics.get(key, 0)


def _connection_times(out: _Writer, processes: list[dict[str, Any]]) -> None:
    """OpenTelemetry's wait, use and create times, as histograms in seconds."""
    for key, metric, help_text in (
        (
            "wait_time",
            "db_client_connection_wait_time_seconds",
            "Time spent waiting to check a connection out (pre-ping and connecting included).",
        ),
        (
            "use_time",
            "db_client_connection_use_time_seconds",
            "Time a connection stayed checked out.",
        ),
        (
            "create_time",
            "db_client_connection_create_time_seconds",
            "Time taken to open a new connection.",
        ),
    ):
        out.family(metric, "histogram", help_text)
        for process in processes:
            labels = _process_labels(process)
            for name, times in sorted((process.get("histograms") or {}).items()):
                _histogram(out, metric, {**labels, "pool": name}, times[key])


def _histogram(out: _Writer, metric: str, labels: _Labels, found: dict[str, Any]) -> None:
    counts = [int(n) for n in found["counts"]]
    seen = 0
    for le, index in _BOUNDS:
        seen += counts[index]
        out.sample(f"{metric}_bucket", seen, {**labels, "le": le})
    out.sample(f"{metric}_bucket", sum(counts), {**labels, "le": "+Inf"})
    out.sample(f"{metric}_sum", _seconds(int(found["sum_us"])), labels)
    out.sample(f"{metric}_count", sum(counts), labels)


def _pool_figures(out: _Writer, rows: _PoolRows) -> None:
    """The pool's settings, gauges and counters of our own, and its circuit breaker's state."""
    for metric, field, kind, help_text in (
        ("pool_size", "pool_size", "gauge", "Configured pool size (POOL_SIZE)."),
        ("pool_max_overflow", "max_overflow", "gauge", "Configured maximum overflow."),
        ("pool_overflow", "overflow", "gauge", "Overflow connections open right now."),
        ("pool_utilization_ratio", "utilization", "gauge", "Checked out / capacity, 0..1."),
        (
            "pool_peak_checked_out",
            "peak_checked_out",
            "gauge",
            "Most connections checked out at once since the reset.",
        ),
        ("pool_connects_total", "connects", "counter", "Connections opened."),
        (
            "pool_connect_errors_total",
            "connect_errors",
            "counter",
            "Failed attempts to open a connection.",
        ),
        ("pool_checkouts_total", "checkouts", "counter", "Connections checked out."),
        (
            "pool_queued_checkouts_total",
            "queued",
            "counter",
            "Checkouts that found every connection in use and queued for one.",
        ),
        (
            "pool_invalidations_total",
            "invalidations",
            "counter",
            "Connections invalidated (disconnects, failed rollbacks).",
        ),
        ("pool_leaks_total", "leaks", "counter", "Connections held past LEAK_THRESHOLD."),
        (
            "pool_slow_queries_total",
            "slow_queries",
            "counter",
            "Statements slower than SLOW_QUERY_THRESHOLD.",
        ),
    ):
        out.family(f"mingus_sessions_{metric}", kind, help_text)
        _each_pool(out, rows, f"mingus_sessions_{metric}", _get(field))
    replicas = [row for row in rows if row[2].get("replica_of")]
    out.family(
        "mingus_sessions_replica_lag_seconds",
        "gauge",
        "A replica's replay lag as last sampled (absent while unknown); label replica_of: "
        "its primary's pool.",
    )
    for labels, name, m in replicas:
        if m.get("replica_lag") is not None:
            out.sample(
                "mingus_sessions_replica_lag_seconds",
                m["replica_lag"],
                {**labels, "pool": name, "replica_of": str(m["replica_of"])},
            )
    out.family(
        "mingus_sessions_replica_serving",
        "gauge",
        "1 when the replica may serve reads (reachable, a standby, within MAX_REPLICA_LAG), "
        "else 0.",
    )
    for labels, name, m in replicas:
        out.sample(
            "mingus_sessions_replica_serving",
            int(m.get("replica_state") == "serving"),
            {**labels, "pool": name, "replica_of": str(m["replica_of"])},
        )
    out.family(
        "mingus_sessions_circuit_state",
        "gauge",
        "Circuit breaker state: 0 closed, 1 half open, 2 open.",
    )
    _each_pool(
        out,
        rows,
        "mingus_sessions_circuit_state",
        lambda m: _CIRCUIT.get(str(m.get("circuit_state")), 0),
    )


def _session_counters(out: _Writer, processes: list[dict[str, Any]]) -> None:
    """Each process's scopes, transactions, rollbacks, savepoints and retries (no pool label)."""
    for key, metric, kind, help_text in (
        ("total_sessions", "mingus_sessions_opened_total", "counter", "Sessions opened."),
        ("active_sessions", "mingus_sessions_active", "gauge", "Sessions open now."),
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
            "mingus_sessions_failed_total",
            "counter",
            "Scopes that ended with an exception.",
        ),
        ("savepoints", "mingus_sessions_savepoints_total", "counter", "Savepoints opened."),
        ("retries", "mingus_sessions_retries_total", "counter", "Retries of transient failures."),
    ):
        out.family(metric, kind, help_text)
        for process in processes:
            out.sample(metric, int(process["sessions"].get(key, 0)), _process_labels(process))
