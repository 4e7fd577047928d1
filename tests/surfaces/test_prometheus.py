"""The Prometheus exposition: histograms that add up, a host and pid on every series, exact
values, names without doubled words.

The exposition is parsed with ``prometheus_client``'s own parser (as Prometheus
reads it), compared value by value with the recorder and ``get_pool_metrics()``,
and linted by ``promtool check metrics`` (Debian's ``prometheus`` package). The
fleet's exposition is checked here from processes' snapshots; the real
multi-process scrape is in ``tests/fleet``.
"""

from __future__ import annotations

import copy
import itertools
import os
import re
import shutil
import socket
import subprocess
from typing import Any

import pytest
from django.db import connections
from sqlalchemy import text

from mingus_sessions import fleet, session_scope
from mingus_sessions._core.histogram import FIXED_BOUNDS_US
from mingus_sessions._core.recorder import PoolRecorder
from mingus_sessions.engines import get_entry
from mingus_sessions.metrics import get_pool_metrics, get_session_stats, render_prometheus
from mingus_sessions.metrics.prometheus import CONTENT_TYPE
from tests.helpers import Holder
from tests.surfaces.helpers import BACKEND, configure, db, select_one

pytestmark = pytest.mark.usefixtures("no_sampler")

parser = pytest.importorskip("prometheus_client.parser")

PASSWORD = "s3ntinel-Pa55word-in-prometheus"
MARKER = "needle-5d1e-bound-parameter"
HISTOGRAMS = {
    "db_client_connection_wait_time_seconds": ("acquire_wait_ms", "acquire"),
    "db_client_connection_use_time_seconds": ("hold_ms", "hold"),
    "db_client_connection_create_time_seconds": ("connect_ms", "connect_time"),
}
POOL_GAUGES = {
    "mingus_sessions_pool_size": "pool_size",
    "mingus_sessions_pool_max_overflow": "max_overflow",
    "mingus_sessions_pool_overflow": "overflow",
    "mingus_sessions_pool_utilization_ratio": "utilization",
    "mingus_sessions_pool_peak_checked_out": "peak_checked_out",
}
POOL_COUNTERS = {
    "mingus_sessions_pool_connects_total": "connects",
    "mingus_sessions_pool_connect_errors_total": "connect_errors",
    "mingus_sessions_pool_checkouts_total": "checkouts",
    "mingus_sessions_pool_queued_checkouts_total": "queued",
    "mingus_sessions_pool_invalidations_total": "invalidations",
    "mingus_sessions_pool_leaks_total": "leaks",
    "mingus_sessions_pool_slow_queries_total": "slow_queries",
}
SESSION_METRICS = {
    "total_sessions": "mingus_sessions_opened_total",
    "active_sessions": "mingus_sessions_active",
    "committed_transactions": "mingus_sessions_transactions_committed_total",
    "transaction_rollbacks": "mingus_sessions_rollbacks_total",
    "failed_sessions": "mingus_sessions_failed_total",
    "savepoints": "mingus_sessions_savepoints_total",
    "retries": "mingus_sessions_retries_total",
}
LE = ["0.001", "0.005", "0.01", "0.05", "0.1", "0.5", "1.0", "5.0", "10.0", "+Inf"]
#: What promtool may say about the exposition: the suffix OpenTelemetry's name implies.
PROMTOOL_ALLOWED = [
    'db_client_connection_count non-histogram and non-summary metrics should not have "_count" '
    "suffix"
]


def samples(exposition: str) -> list[Any]:
    return [s for f in parser.text_string_to_metric_families(exposition) for s in f.samples]


def families(exposition: str) -> dict[str, Any]:
    return {f.name: f for f in parser.text_string_to_metric_families(exposition)}


def of(exposition: str, name: str, **labels: str) -> dict[str, float]:
    """``{pool: value}`` of the samples named ``name`` with ``labels``."""
    return {
        s.labels.get("pool", ""): s.value
        for s in samples(exposition)
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    }


def me() -> dict[str, str]:
    return {"host": socket.gethostname(), "pid": str(os.getpid())}


def traffic() -> None:
    for _ in range(4):
        select_one()
    select_one("other")
    with pytest.raises(RuntimeError), session_scope() as session:
        session.execute(text("SELECT 1"))
        raise RuntimeError


@db
def test_exposition_parses_and_equals_pool_metrics(settings: Any) -> None:
    """Every family is there, typed, labelled with this host and pid, equal to the metrics."""
    if BACKEND == "sqlite":  # :memory: pools are StaticPools: no limit, no acquire wait
        configure(settings, {"main": {"DATABASE": "default", "POOL_SIZE": 5, "MAX_OVERFLOW": 5}})
    traffic()
    holder = Holder("main")  # one connection in use while the text is rendered
    try:
        exposition = render_prometheus()
        pools = get_pool_metrics()
        sessions = get_session_stats()
        recorded = {
            (pool, name): getattr(get_entry(pool).probe, attribute)
            for pool in pools
            for name, (_, attribute) in HISTOGRAMS.items()
        }
        fixed = {key: histogram.fixed_counts() for key, histogram in recorded.items()}
        sums = {key: histogram.sum_us for key, histogram in recorded.items()}
    finally:
        holder.stop()
    assert CONTENT_TYPE.startswith("text/plain; version=0.0.4")
    assert exposition.endswith("\n")
    found = families(exposition)
    assert all(s.labels["host"] == me()["host"] for s in samples(exposition))
    assert all(s.labels["pid"] == me()["pid"] for s in samples(exposition))
    assert [s.labels["role"] for s in found["mingus_sessions_process_info"].samples] == ["process"]

    assert found["db_client_connection_count"].type == "gauge"
    count = "db_client_connection_count"
    assert of(exposition, count, state="used") == {n: m.checked_out for n, m in pools.items()}
    assert of(exposition, count, state="idle") == {n: m.checked_in for n, m in pools.items()}
    assert of(exposition, count, state="used")["main"] == 1
    maximum = of(exposition, "db_client_connection_max")
    assert maximum == {n: m.capacity for n, m in pools.items() if m.capacity}
    pending = of(exposition, "db_client_connection_pending_requests")
    assert pending == {n: m.waiting for n, m in pools.items()}
    assert found["db_client_connection_timeouts"].type == "counter"
    timeouts = of(exposition, "db_client_connection_timeouts_total")
    assert timeouts == {n: m.timeouts for n, m in pools.items()}

    for name, (field, _) in HISTOGRAMS.items():
        assert found[name].type == "histogram", name
        for pool, metrics in pools.items():
            cumulative: list[int] = []
            for bucket in fixed[pool, name]:
                cumulative.append((cumulative[-1] if cumulative else 0) + bucket)
            buckets = {
                s.labels["le"]: s.value
                for s in found[name].samples
                if s.name == f"{name}_bucket" and s.labels["pool"] == pool
            }
            assert list(buckets) == LE
            assert list(buckets.values()) == cumulative
            assert buckets["+Inf"] == getattr(metrics, field).count
            assert of(exposition, f"{name}_count")[pool] == getattr(metrics, field).count
            line = next(
                line
                for line in exposition.splitlines()
                if line.startswith(f"{name}_sum{{") and f'pool="{pool}"' in line
            )
            micros = sums[pool, name]
            assert line.split()[-1] == f"{micros / 1e6:.6f}".rstrip("0").rstrip("."), line
    wait = "db_client_connection_wait_time_seconds_count"
    assert of(exposition, wait)["main"] == pools["main"].checkouts == 6

    for metric, field in {**POOL_GAUGES, **POOL_COUNTERS}.items():
        assert of(exposition, metric) == {
            n: pytest.approx(getattr(m, field)) for n, m in pools.items()
        }, metric
    assert of(exposition, "mingus_sessions_circuit_state") == {"main": 0, "other": 0}
    for key, metric in SESSION_METRICS.items():
        assert of(exposition, metric) == {"": sessions[key]}, metric
    assert sessions["failed_sessions"] == 1
    assert sessions["active_sessions"] == 1  # the holder's


@db
def test_every_family_has_help_and_type_valid_names_and_no_doubled_word() -> None:
    """HELP and TYPE once per family; names Prometheus accepts; no word twice in a row."""
    select_one()
    exposition = render_prometheus()
    helps = re.findall(r"^# HELP (\S+) ", exposition, re.MULTILINE)
    types = re.findall(r"^# TYPE (\S+) (\w+)$", exposition, re.MULTILINE)
    assert len(helps) == len(set(helps)) == len(types)
    assert [name for name, _ in types] == helps
    for name in helps:
        assert re.fullmatch(r"[a-zA-Z_:][a-zA-Z0-9_:]*", name), name
        assert name.startswith(("db_client_connection_", "mingus_sessions_")), name
        words = name.split("_")
        assert all(a != b for a, b in itertools.pairwise(words)), name
        # "mingus_sessions_sessions_..." would repeat the package's own last word.
        assert not name.startswith("mingus_sessions_sessions"), name
    for line in exposition.splitlines():
        if line and not line.startswith("#"):
            assert re.fullmatch(r"[a-zA-Z_:][a-zA-Z0-9_:]*\{[^}]*\} \S+", line), line


def snapshot_as(process: dict[str, Any], host: str, pid: int, scale: int) -> dict[str, Any]:
    """``process`` as another process would publish it, with its counts times ``scale``."""
    other = copy.deepcopy(process)
    other["host"], other["pid"] = host, pid
    for times in other["histograms"].values():
        for found in times.values():
            found["counts"] = [n * scale for n in found["counts"]]
            found["sum_us"] *= scale
    for metrics in other["pools"].values():
        metrics["checkouts"] *= scale
    return other


@db
def test_the_fleets_histograms_add_up_across_processes(settings: Any) -> None:
    """Three processes' buckets, sums and counts add up to what each published, per pool."""
    configure(settings, {"main": {"DATABASE": "default", "POOL_SIZE": 3, "MAX_OVERFLOW": 1}})
    for _ in range(7):
        select_one()
    mine = fleet.local_snapshot("web")
    processes = [mine, snapshot_as(mine, "other-host", 11, 2), snapshot_as(mine, "zz", 12, 5)]
    exposition = render_prometheus(processes)
    wait = "db_client_connection_wait_time_seconds"
    per_process: dict[tuple[str, str], float] = {}
    total_per_le: dict[str, float] = {}
    for s in samples(exposition):
        if s.name == f"{wait}_bucket" and s.labels["pool"] == "main":
            total_per_le[s.labels["le"]] = total_per_le.get(s.labels["le"], 0) + s.value
            per_process[s.labels["host"], s.labels["le"]] = s.value
    assert {host for host, _ in per_process} == {me()["host"], "other-host", "zz"}
    assert total_per_le["+Inf"] == 7 * (1 + 2 + 5)
    assert total_per_le["+Inf"] == sum(
        s.value
        for s in samples(exposition)
        if s.name == f"{wait}_count" and s.labels["pool"] == "main"
    )
    for le, value in total_per_le.items():
        assert value == 8 * per_process[me()["host"], le], le
    info = {
        (s.labels["host"], s.labels["pid"])
        for s in families(exposition)["mingus_sessions_process_info"].samples
    }
    assert info == {(me()["host"], me()["pid"]), ("other-host", "11"), ("zz", "12")}


@db
def test_values_are_exact_without_float_noise() -> None:
    """Ratios rounded, times written from whole µs: never 0.30000000000000004 or 1e-06."""
    mine = fleet.local_snapshot("web")
    pool = mine["pools"]["main"]
    pool["utilization"] = 0.1 + 0.2
    mine["histograms"]["main"] = {
        key: {"counts": [1] + [0] * len(FIXED_BOUNDS_US), "sum_us": micros}
        for key, micros in (("wait_time", 4700), ("use_time", 1), ("create_time", 123456789))
    }
    exposition = render_prometheus([mine])
    assert of(exposition, "mingus_sessions_pool_utilization_ratio")["main"] == 0.3
    values = [
        line.rsplit(" ", 1)[1] for line in exposition.splitlines() if not line.startswith("#")
    ]
    for value in values:
        assert re.fullmatch(r"\d+(\.\d{1,6})?", value), value
    sums = {
        line.split("{")[0]: line.rsplit(" ", 1)[1]
        for line in exposition.splitlines()
        if "_seconds_sum{" in line and 'pool="main"' in line
    }
    assert sums == {
        "db_client_connection_wait_time_seconds_sum": "0.0047",
        "db_client_connection_use_time_seconds_sum": "0.000001",
        "db_client_connection_create_time_seconds_sum": "123.456789",
    }


@db
def test_label_values_are_escaped() -> None:
    """Quotes, backslashes and newlines in a pool name or a host survive a parse."""
    mine = fleet.local_snapshot("web")
    weird = 'we"ird\\pool\nname'
    mine["pools"][weird] = mine["pools"].pop("other")
    mine["histograms"][weird] = mine["histograms"].pop("other")
    mine["host"] = 'host"\\x'
    found = samples(render_prometheus([mine]))
    assert {s.labels.get("pool") for s in found} == {weird, "main", None}
    assert {s.labels["host"] for s in found} == {'host"\\x'}


def promtool(exposition: str) -> list[str]:
    """What ``promtool check metrics`` says about ``exposition``, one finding per line."""
    tool = shutil.which("promtool")
    if tool is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is not installed (Debian's prometheus package; .ci/run)")
        pytest.skip("promtool is not installed (Debian's prometheus package)")
    result = subprocess.run(
        [tool, "check", "metrics"], input=exposition, capture_output=True, text=True, timeout=60
    )
    found = (result.stdout + result.stderr).strip().splitlines()
    assert result.returncode in (0, 3), found  # 3: lint findings, listed
    return found


@db
def test_promtool_reports_only_the_count_suffix_opentelemetry_implies(settings: Any) -> None:
    """promtool check metrics on a fleet's exposition finds nothing else."""
    configure(settings, {"main": {"DATABASE": "default", "POOL_SIZE": 3, "MAX_OVERFLOW": 1}})
    for _ in range(3):
        select_one()
    mine = fleet.local_snapshot("web")
    exposition = render_prometheus([mine, snapshot_as(mine, "other-host", 7, 3)])
    assert promtool(exposition) == PROMTOOL_ALLOWED


@db
def test_no_password_or_parameter_in_the_exposition(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Neither the database password nor a bound parameter ever reaches the exposition."""
    if BACKEND == "mysql":
        pytest.skip("the local MariaDB root has no password: a set one would be refused")
    monkeypatch.setitem(connections.settings["default"], "PASSWORD", PASSWORD)
    configure(settings, SLOW_QUERY_THRESHOLD=1e-9)  # every statement is kept as slow
    with session_scope() as session:
        session.execute(text("SELECT :marker"), {"marker": MARKER})
    recorder = get_entry("main").probe
    assert isinstance(recorder, PoolRecorder)
    assert recorder.slowest()  # the statement was recorded
    exposition = render_prometheus()
    assert PASSWORD not in exposition
    assert MARKER not in exposition
    assert of(exposition, "mingus_sessions_pool_slow_queries_total")["main"] >= 1
