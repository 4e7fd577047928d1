"""The Prometheus exposition and the pool sizing advice.

The exposition is parsed with ``prometheus_client``'s own parser, so it is
checked as Prometheus reads it, and compared value by value with
``get_pool_metrics()``.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

import pytest
from django.db import connections
from sqlalchemy import event, text

from mingus_sessions import PoolExhaustedError, session_scope
from mingus_sessions._core.recorder import PoolRecorder
from mingus_sessions.engines import get_engine, get_entry
from mingus_sessions.metrics import (
    advise_pools,
    get_pool_metrics,
    get_session_stats,
    render_prometheus,
)
from mingus_sessions.metrics.prometheus import CONTENT_TYPE
from tests.helpers import Holder
from tests.surfaces.helpers import BACKEND, configure, db, select_one

#: A running sampler would publish a fleet entry that advise_pools() reads
#: instead of this process's live metrics (tests/surfaces/conftest.py).
pytestmark = pytest.mark.usefixtures("no_sampler")

parser = pytest.importorskip("prometheus_client.parser")

PASSWORD = "s3ntinel-Pa55word-in-prometheus"
MARKER = "needle-5d1e-bound-parameter"
SUMMARIES = {
    "db_client_connection_wait_time_seconds": ("acquire_wait_ms", "acquire"),
    "db_client_connection_use_time_seconds": ("hold_ms", "hold"),
    "db_client_connection_create_time_seconds": ("connect_ms", "connect_time"),
}
POOL_GAUGES = ("pool_size", "max_overflow", "overflow", "utilization", "peak_checked_out")
POOL_COUNTERS = (
    "connects",
    "connect_errors",
    "checkouts",
    "invalidations",
    "leaks",
    "slow_queries",
)
SESSION_METRICS = {
    "total_sessions": "mingus_sessions_sessions_total",
    "active_sessions": "mingus_sessions_sessions_active",
    "committed_transactions": "mingus_sessions_transactions_committed_total",
    "transaction_rollbacks": "mingus_sessions_rollbacks_total",
    "failed_sessions": "mingus_sessions_sessions_failed_total",
    "savepoints": "mingus_sessions_savepoints_total",
    "retries": "mingus_sessions_retries_total",
}


def capacity_of(found: dict[str, Any], alias: str) -> dict[str, Any]:
    """The capacity entry of the server that database alias ``alias`` is on."""
    (entry,) = [c for c in found["capacity"].values() if alias in c["databases"].split(", ")]
    return entry


def aliases_in(found: dict[str, Any]) -> set[str]:
    return {a for c in found["capacity"].values() for a in c["databases"].split(", ")}


def families(exposition: str) -> dict[str, Any]:
    return {f.name: f for f in parser.text_string_to_metric_families(exposition)}


def by_pool(family: Any, sample_name: str | None = None, **labels: str) -> dict[str, float]:
    """``{pool: value}`` of the family's samples named ``sample_name`` with ``labels``."""
    name = sample_name or family.name
    return {
        s.labels["pool"]: s.value
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    }


# -- Prometheus --------------------------------------------------------------------------------


@db
def test_exposition_parses_and_equals_pool_metrics() -> None:
    """Every OpenTelemetry-named family is there, typed, and equal to get_pool_metrics()."""
    for _ in range(4):
        select_one()
    select_one("other")
    with pytest.raises(RuntimeError), session_scope() as session:
        session.execute(text("SELECT 1"))
        raise RuntimeError
    holder = Holder("main")  # one connection in use while the text is rendered
    try:
        exposition = render_prometheus()
        pools = get_pool_metrics()
        sessions = get_session_stats()
        sums_us = {
            (pool, histogram): getattr(get_entry(pool).probe, histogram).sum_us
            for pool in pools
            for _, histogram in SUMMARIES.values()
        }
    finally:
        holder.stop()
    assert CONTENT_TYPE.startswith("text/plain; version=0.0.4")
    assert exposition.endswith("\n")
    found = families(exposition)

    count = found["db_client_connection_count"]
    assert count.type == "gauge"
    assert by_pool(count, state="used") == {n: m.checked_out for n, m in pools.items()}
    assert by_pool(count, state="idle") == {n: m.checked_in for n, m in pools.items()}
    assert by_pool(count, state="used")["main"] == 1
    assert {s.labels["state"] for s in count.samples} == {"used", "idle"}

    assert found["db_client_connection_max"].type == "gauge"
    assert by_pool(found["db_client_connection_max"]) == {"main": 10, "other": 2}
    pending = found["db_client_connection_pending_requests"]
    assert pending.type == "gauge"
    assert by_pool(pending) == {n: m.waiting for n, m in pools.items()}
    timeouts = found["db_client_connection_timeouts"]
    assert timeouts.type == "counter"
    assert by_pool(timeouts, "db_client_connection_timeouts_total") == {
        n: m.timeouts for n, m in pools.items()
    }

    for name, (field, histogram) in SUMMARIES.items():
        family = found[name]
        assert family.type == "summary", name
        for pool, metrics in pools.items():
            percentiles = getattr(metrics, field)
            quantiles = {
                s.labels["quantile"]: s.value
                for s in family.samples
                if s.name == name and s.labels["pool"] == pool
            }
            assert quantiles == {
                "0.5": pytest.approx(percentiles.p50 / 1000),
                "0.95": pytest.approx(percentiles.p95 / 1000),
                "0.99": pytest.approx(percentiles.p99 / 1000),
            }
            assert by_pool(family, f"{name}_count")[pool] == percentiles.count
            total_us = sums_us[pool, histogram]
            assert by_pool(family, f"{name}_sum")[pool] == pytest.approx(total_us / 1e6)
    wait = "db_client_connection_wait_time_seconds"
    assert by_pool(found[wait], f"{wait}_count")["main"] == pools["main"].checkouts == 6
    create = "db_client_connection_create_time_seconds"
    assert by_pool(found[create], f"{create}_count")["main"] == pools["main"].connects

    for field in POOL_GAUGES:
        family = found[f"mingus_sessions_pool_{field}"]
        assert family.type == "gauge", field
        assert by_pool(family) == {n: getattr(m, field) for n, m in pools.items()}, field
    for field in POOL_COUNTERS:
        family = found[f"mingus_sessions_pool_{field}"]
        assert family.type == "counter", field
        assert by_pool(family, f"mingus_sessions_pool_{field}_total") == {
            n: getattr(m, field) for n, m in pools.items()
        }, field
    assert by_pool(found["mingus_sessions_circuit_state"]) == {"main": 0, "other": 0}

    for key, metric in SESSION_METRICS.items():
        family_name = metric.removesuffix("_total")
        samples = [s for s in found[family_name].samples if s.name == metric]
        assert [s.value for s in samples] == [sessions[key]], metric
    assert sessions["failed_sessions"] == 1
    assert sessions["active_sessions"] == 1  # the holder's


@db
def test_every_family_has_help_and_type_and_valid_names() -> None:
    """HELP and TYPE once per family; metric and label names Prometheus accepts."""
    select_one()
    exposition = render_prometheus()
    helps = re.findall(r"^# HELP (\S+) ", exposition, re.MULTILINE)
    types = re.findall(r"^# TYPE (\S+) (\w+)$", exposition, re.MULTILINE)
    assert len(helps) == len(set(helps)) == len(types)
    assert [name for name, _ in types] == helps
    for name in helps:
        assert re.fullmatch(r"[a-zA-Z_:][a-zA-Z0-9_:]*", name), name
        assert name.startswith(("db_client_connection_", "mingus_sessions_")), name
    for line in exposition.splitlines():
        if line and not line.startswith("#"):
            assert re.fullmatch(r"[a-zA-Z_:][a-zA-Z0-9_:]*(\{[^}]*\})? \S+", line), line


@db
def test_label_values_are_escaped() -> None:
    """Quotes, backslashes and newlines in a pool name survive a parse."""
    metrics = get_pool_metrics("main")
    weird = 'we"ird\\pool\nname'
    exposition = render_prometheus(
        {weird: dataclasses.replace(metrics, name=weird), "main": metrics},
        sums_ms={weird: (1.0, 2.0, 3.0)},
    )
    found = families(exposition)
    pools = {s.labels.get("pool") for f in found.values() for s in f.samples}
    assert pools == {weird, "main", None}  # None: the session-wide metrics
    wait = found["db_client_connection_wait_time_seconds"]
    assert by_pool(wait, "db_client_connection_wait_time_seconds_sum")[weird] == 0.001
    use = found["db_client_connection_use_time_seconds"]
    assert by_pool(use, "db_client_connection_use_time_seconds_sum")[weird] == 0.002


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
    assert families(exposition)["mingus_sessions_pool_slow_queries"]


# -- advice ------------------------------------------------------------------------------------


def advice_for(pool: str, found: dict[str, Any]) -> list[dict[str, str]]:
    return [a for a in found["advice"] if a["pool"] == pool]


def raise_to(recommendation: str) -> int:
    match = re.search(r"Raise POOL_SIZE to (\d+)", recommendation)
    assert match, recommendation
    return int(match.group(1))


@db
def test_advice_shape() -> None:
    """{"advice": [{pool, severity, message, recommendation}], "capacity": {...}}."""
    select_one()
    found = advise_pools()
    assert set(found) == {"advice", "capacity"}
    assert found["advice"]
    for advice in found["advice"]:
        assert set(advice) == {"pool", "severity", "message", "recommendation"}
        assert advice["severity"] in {"info", "warning", "critical"}
        assert all(isinstance(value, str) and value for value in advice.values())
    # little traffic: no sizing advice yet, only "ask again later"
    main = advice_for("main", found)
    assert [a["severity"] for a in main] == ["info"]
    assert "1 checkout" in main[0]["message"]
    assert aliases_in(found) == {"default", "other"}
    default = capacity_of(found, "default")
    assert {
        "backend",
        "processes",
        "demand",
        "max_connections",
        "reserved",
        "usable",
        "headroom",
        "pools",
    } <= set(default)
    assert default["processes"] == 1
    # On PostgreSQL both aliases are one server, which both pools share.
    assert default["demand"] == (10 if BACKEND == "sqlite" else 12)
    assert default["pools"]["main"] == {"processes": 1, "capacity": 10, "demand": 10}
    assert capacity_of(found, "other")["pools"]["other"]["demand"] == 2
    assert json.loads(json.dumps(found)) == found
    assert not [a for a in found["advice"] if a["severity"] == "critical"]


@db
def test_timeouts_give_critical_advice_to_raise_pool_size(settings: Any) -> None:
    """A pool whose checkouts timed out: "critical", raise POOL_SIZE above what it is."""
    configure(
        settings,
        {"tiny": {"DATABASE": "default", "POOL_SIZE": 1, "MAX_OVERFLOW": 0, "POOL_TIMEOUT": 0.1}},
    )
    holder = Holder("tiny")
    try:
        with pytest.raises(PoolExhaustedError):
            select_one("tiny")
    finally:
        holder.stop()
    assert get_pool_metrics("tiny").timeouts == 1
    tiny = advice_for("tiny", advise_pools())
    critical = [a for a in tiny if a["severity"] == "critical"]
    assert len(critical) == 1
    assert "timed out" in critical[0]["message"]
    assert raise_to(critical[0]["recommendation"]) > 1


@db
@pytest.mark.slow
def test_oversized_pool_gets_info_to_lower_pool_size() -> None:
    """1000 checkouts never more than one at a time on a pool of 5: lower POOL_SIZE."""
    for _ in range(1000):
        select_one()
    metrics = get_pool_metrics("main")
    assert metrics.checkouts == 1000
    assert metrics.peak_checked_out == 1
    main = advice_for("main", advise_pools())
    assert [a["severity"] for a in main] == ["info"]
    assert "Lower POOL_SIZE to 2" in main[0]["recommendation"]
    assert "1000 checkouts" in main[0]["message"]


@db
def test_overflow_use_gives_a_warning(settings: Any) -> None:
    """Overflow connections were needed: warning, raise POOL_SIZE to the peak."""
    configure(
        settings,
        {"spill": {"DATABASE": "default", "POOL_SIZE": 1, "MAX_OVERFLOW": 2, "POOL_TIMEOUT": 10}},
    )
    holders = [Holder("spill") for _ in range(3)]
    for holder in holders:
        holder.stop()
    assert get_pool_metrics("spill").peak_checked_out == 3
    spill = advice_for("spill", advise_pools())
    warnings = [a for a in spill if a["severity"] == "warning"]
    assert len(warnings) == 1
    assert "Overflow" in warnings[0]["message"]
    assert raise_to(warnings[0]["recommendation"]) == 3


@db
def test_leaks_give_a_warning(settings: Any) -> None:
    """A connection held past LEAK_THRESHOLD: a warning that points at the leaks log."""
    import time

    configure(settings, LEAK_THRESHOLD=0.05)
    with session_scope() as session:
        session.execute(text("SELECT 1"))
        time.sleep(0.08)
    assert get_pool_metrics("main").leaks == 1
    warnings = [a for a in advice_for("main", advise_pools()) if a["severity"] == "warning"]
    assert len(warnings) == 1
    assert "LEAK_THRESHOLD" in warnings[0]["message"]
    assert "mingus_sessions.leaks" in warnings[0]["message"]


@db
def test_capacity_without_a_server_limit_on_sqlite() -> None:
    """SQLite has no max_connections: the capacity check reports None and flags nothing."""
    if BACKEND != "sqlite":
        pytest.skip("SQLite only")
    default = capacity_of(advise_pools(), "default")
    assert default["backend"] == "sqlite+pysqlite"
    assert default["max_connections"] is None
    assert default["usable"] is None
    assert default["headroom"] is None
    assert "error" not in default


def server_setting(name: str) -> int:
    with connections["default"].cursor() as cursor:
        cursor.execute(f"SHOW {name}")
        return int(cursor.fetchone()[0])


@db
@pytest.mark.postgresql
def test_capacity_reads_max_connections_from_postgresql() -> None:
    """max_connections comes from the server; the suite's pools fit under it."""
    default = capacity_of(advise_pools(), "default")
    most = server_setting("max_connections")
    reserved = server_setting("superuser_reserved_connections")
    assert default["backend"] == "postgresql+psycopg"
    assert default["max_connections"] == most
    assert default["reserved"] == reserved
    assert default["usable"] == most - reserved
    assert default["headroom"] == most - reserved - 12  # main 10 + other 2, one server
    assert "error" not in default


@db
@pytest.mark.postgresql
def test_capacity_over_max_connections_is_critical(settings: Any) -> None:
    """Pools that could open more than the server allows: "critical", nothing opened."""
    most = server_setting("max_connections")
    configure(
        settings,
        {"huge": {"DATABASE": "default", "POOL_SIZE": most, "MAX_OVERFLOW": 0}},
    )
    opened: list[int] = []
    event.listen(get_engine("huge"), "connect", lambda *args: opened.append(1))
    found = advise_pools()
    default = capacity_of(found, "default")
    assert default["max_connections"] == most
    assert default["demand"] == 12 + most
    assert default["demand"] > default["usable"]
    assert default["headroom"] < 0
    critical = [a for a in found["advice"] if a["severity"] == "critical" and "huge" in a["pool"]]
    assert len(critical) == 1
    assert "max_connections" in critical[0]["message"]
    assert opened == []  # the check never opened the huge pool's connections
    assert get_pool_metrics("huge").connects == 0
