"""Pool sizing advice: consistent with its own evidence, from every process of the fleet.

The rules are checked on this process's real pools (``advise_pools(local=True)``)
and on fleets of processes published to a cache of the test's own, whose
figures are set so that each rule meets its edge; what a real fleet of gunicorn
and Celery processes gets is in ``tests/fleet``.
"""

from __future__ import annotations

import json
import re
import threading
import time
from typing import Any

import pytest
from django.db import connections
from sqlalchemy import event, text

from mingus_sessions import PoolExhaustedError, session_scope
from mingus_sessions.engines import get_engine
from mingus_sessions.metrics import advise_pools, get_pool_metrics
from tests.helpers import Holder
from tests.surfaces.helpers import BACKEND, configure, db, publish, select_one, wait_until

pytestmark = pytest.mark.usefixtures("no_sampler")


def capacity_of(found: dict[str, Any], alias: str) -> dict[str, Any]:
    """The capacity entry of the server that database alias ``alias`` is on."""
    (entry,) = [c for c in found["capacity"].values() if alias in c["databases"].split(", ")]
    return entry


def aliases_in(found: dict[str, Any]) -> set[str]:
    return {a for c in found["capacity"].values() for a in c["databases"].split(", ")}


def advice_for(pool: str, found: dict[str, Any]) -> list[dict[str, Any]]:
    return [a for a in found["advice"] if a["pool"] == pool]


def size_target(recommendation: str) -> tuple[int, int]:
    match = re.search(r"(?:Raise|Lower) POOL_SIZE from (\d+) to (\d+)", recommendation)
    assert match, recommendation
    return int(match.group(1)), int(match.group(2))


# -- this process's pools ----------------------------------------------------------------------


@db
def test_advice_shape() -> None:
    """{"advice": [{pool, severity, message, recommendation, setting, evidence}], "capacity",
    "fleet"}."""
    select_one()
    found = advise_pools(local=True)
    assert set(found) == {"advice", "capacity", "fleet"}
    assert found["fleet"] == {"source": "local", "processes": 1}
    for advice in found["advice"]:
        assert set(advice) == {
            "pool",
            "severity",
            "message",
            "recommendation",
            "setting",
            "evidence",
        }
        assert advice["severity"] in {"info", "warning", "critical"}
    # little traffic: no sizing advice yet, only "ask again later"
    main = advice_for("main", found)
    assert [a["severity"] for a in main] == ["info"]
    assert "Only 1 checkout(s) observed so far in 1 process(es)" in main[0]["message"]
    assert main[0]["evidence"]["checkouts"] == 1
    assert aliases_in(found) == {"default", "other"}
    default = capacity_of(found, "default")
    assert default["processes"] == 1
    # On PostgreSQL both aliases are one server, which both pools share.
    assert default["demand"] == (10 if BACKEND == "sqlite" else 12)
    assert default["pools"]["main"] == {"processes": 1, "capacity": 10, "demand": 10}
    assert capacity_of(found, "other")["pools"]["other"]["demand"] == 2
    assert json.loads(json.dumps(found)) == found
    assert not [a for a in found["advice"] if a["severity"] == "critical"]


@db
def test_timeouts_of_a_full_pool_give_critical_advice_to_raise_pool_size(settings: Any) -> None:
    """Checkouts timed out on a full pool: "critical", raise POOL_SIZE, quoting the figures."""
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
    metrics = get_pool_metrics("tiny")
    assert (metrics.timeouts, metrics.queued) == (1, 1)
    [critical] = advice_for("tiny", advise_pools(local=True))
    assert critical["severity"] == "critical"
    assert critical["setting"] == "POOL_SIZE"
    assert "1 queued for a connection, 1 timed out; at most 1 of 1" in critical["message"]
    assert size_target(critical["recommendation"]) == (1, 3)


@db
def test_a_caller_that_queued_is_counted(settings: Any) -> None:
    """A checkout that found every connection in use and waited for one counts as queued."""
    configure(settings, {"tiny": {"DATABASE": "default", "POOL_SIZE": 1, "MAX_OVERFLOW": 0}})
    holder = Holder("tiny")
    waiter = threading.Thread(target=select_one, args=("tiny",))
    waiter.start()  # finds the only connection in use, and queues for it
    assert wait_until(lambda: get_pool_metrics("tiny").waiting == 1)
    holder.stop()
    waiter.join(10)
    metrics = get_pool_metrics("tiny")
    assert (metrics.queued, metrics.timeouts, metrics.checkouts) == (1, 0, 2)


@db
@pytest.mark.slow
def test_oversized_pool_gets_info_to_lower_pool_size() -> None:
    """1000 checkouts never more than one at a time on a pool of 5: lower POOL_SIZE."""
    for _ in range(1000):
        select_one()
    metrics = get_pool_metrics("main")
    assert (metrics.checkouts, metrics.peak_checked_out) == (1000, 1)
    [info] = advice_for("main", advise_pools(local=True))
    assert info["severity"] == "info"
    assert size_target(info["recommendation"]) == (5, 2)
    assert "1000 checkout(s) in 1 process(es), 0 queued" in info["message"]


@db
def test_overflow_use_without_waiters_keeps_the_capacity(settings: Any) -> None:
    """Overflow was needed but nobody queued: pool size up, overflow down, same capacity."""
    configure(
        settings,
        {"spill": {"DATABASE": "default", "POOL_SIZE": 1, "MAX_OVERFLOW": 2, "POOL_TIMEOUT": 10}},
    )
    holders = [Holder("spill") for _ in range(3)]
    for holder in holders:
        holder.stop()
    assert get_pool_metrics("spill").peak_checked_out == 3
    [warning] = advice_for("spill", advise_pools(local=True))
    assert warning["severity"] == "warning"
    assert "overflow connections were needed" in warning["message"]
    assert warning["recommendation"].startswith(
        "Raise POOL_SIZE from 1 to 3 and lower MAX_OVERFLOW from 2 to 0: the same capacity of 3"
    )


@db
def test_leaks_give_a_warning(settings: Any) -> None:
    """A connection held past LEAK_THRESHOLD: a warning that points at the leaks log."""
    configure(settings, LEAK_THRESHOLD=0.05)
    with session_scope() as session:
        session.execute(text("SELECT 1"))
        time.sleep(0.08)
    assert get_pool_metrics("main").leaks == 1
    [warning] = [
        a for a in advice_for("main", advise_pools(local=True)) if a["severity"] == "warning"
    ]
    assert "LEAK_THRESHOLD" in warning["message"]
    assert "mingus_sessions.leaks" in warning["message"]


# -- fleets of processes -----------------------------------------------------------------------


def wait_p99(ms: float) -> dict[str, float | int]:
    return {"p50": ms / 10, "p95": ms / 2, "p99": ms, "max": ms, "count": 100}


@db
def test_no_advice_to_grow_a_pool_nobody_waited_on(fleet_cache: Any) -> None:
    """The issue's case: peak 1 of 10, acquire-wait p99 120 ms (slow connects), nobody queued."""
    for number in range(3):
        publish(
            number,
            main={"checkouts": 100, "peak_checked_out": 1, "acquire_wait_ms": wait_p99(120.0)},
        )
    found = advise_pools()
    assert (found["fleet"]["source"], found["fleet"]["processes"]) == ("fleet", 3)
    main = advice_for("main", found)
    assert not [a for a in main if "Raise" in a["recommendation"]], main
    assert not [a for a in main if a["severity"] != "info"], main


@db
def test_callers_that_queued_across_the_fleet_grow_the_pool_once(fleet_cache: Any) -> None:
    """Queued checkouts in two of three processes: one warning, one target, the fleet's sums."""
    publish(1, main={"checkouts": 400, "queued": 9, "peak_checked_out": 10})
    publish(2, main={"checkouts": 500, "queued": 3, "peak_checked_out": 10})
    publish(3, main={"checkouts": 100, "queued": 0, "peak_checked_out": 2})
    [warning] = advice_for("main", advise_pools())
    assert warning["severity"] == "warning"
    assert warning["setting"] == "POOL_SIZE"
    evidence = warning["evidence"]
    assert (evidence["processes"], evidence["checkouts"], evidence["queued"]) == (3, 1000, 12)
    assert (
        "1000 checkout(s) in 3 process(es), 12 queued for a connection, 0 timed out; at most 10 "
        "of 10 connections in use at once in any process"
    ) in warning["message"]
    assert size_target(warning["recommendation"]) == (5, 7)


@db
def test_one_recommendation_per_pool_and_setting_whatever_the_evidence(fleet_cache: Any) -> None:
    """Timeouts, queueing, overflow, oversizing and leaks at once: at most one POOL_SIZE
    advice per pool, never a raise and a lower together, each quoting the fleet's figures."""
    publish(
        1, main={"checkouts": 5000, "timeouts": 2, "queued": 40, "peak_checked_out": 10, "leaks": 1}
    )
    publish(
        2,
        main={"checkouts": 5000, "peak_checked_out": 1},
        other={"checkouts": 3000, "peak_checked_out": 1},
    )
    publish(3, other={"checkouts": 3000, "peak_checked_out": 2, "acquire_wait_ms": wait_p99(50.0)})
    found = advise_pools()
    for pool in ("main", "other"):
        settings_advised = [a["setting"] for a in advice_for(pool, found) if a["setting"]]
        assert len(settings_advised) == len(set(settings_advised)), advice_for(pool, found)
    [size] = [a for a in advice_for("main", found) if a["setting"] == "POOL_SIZE"]
    assert size["severity"] == "critical"
    assert (
        "10000 checkout(s) in 3 process(es), 40 queued for a connection, 2 timed out"
        in size["message"]
    )
    assert size_target(size["recommendation"]) == (5, 7)
    assert [a["severity"] for a in advice_for("main", found) if a["setting"] is None] == ["warning"]
    # "other" (size 2): never more than 2 in use, nobody waited: nothing to change.
    assert [a for a in advice_for("other", found) if a["severity"] != "info"] == []


@db
def test_timeouts_while_connections_were_free_do_not_grow_the_pool(fleet_cache: Any) -> None:
    """Timeouts with the pool never full (the database was slow to connect): no growth."""
    publish(1, main={"checkouts": 200, "timeouts": 4, "peak_checked_out": 2})
    [warning] = advice_for("main", advise_pools())
    assert warning["severity"] == "warning"
    assert warning["setting"] is None
    assert "Do not grow the pool" in warning["recommendation"]


@db
def test_a_fleet_where_nobody_published_is_said_so(fleet_cache: Any) -> None:
    """No live process: each pool says so, and the capacity counts no process."""
    found = advise_pools()
    assert found["fleet"]["processes"] == 0
    for advice in found["advice"]:
        assert advice["severity"] == "info"
        assert "No live process of the fleet has published" in advice["message"]
    assert capacity_of(found, "default")["processes"] == 0


@db
@pytest.mark.usefixtures("unreachable_fleet")
def test_an_unreachable_fleet_cache_gives_no_advice() -> None:
    """The fleet cache down: no advice from this process as if it were the deployment."""
    found = advise_pools()
    assert found["advice"] == []
    assert found["fleet"]["error"].startswith(
        'The FLEET cache "down" (RedisCache) cannot be reached'
    )
    assert "\n" not in found["fleet"]["error"]


# -- capacity ----------------------------------------------------------------------------------


@db
def test_capacity_without_a_server_limit_on_sqlite() -> None:
    """SQLite has no max_connections: the capacity check reports None and flags nothing."""
    if BACKEND != "sqlite":
        pytest.skip("SQLite only")
    default = capacity_of(advise_pools(local=True), "default")
    assert default["backend"] == "sqlite+pysqlite"
    assert (default["max_connections"], default["usable"], default["headroom"]) == (None,) * 3
    assert "error" not in default


def server_setting(name: str) -> int:
    with connections["default"].cursor() as cursor:
        cursor.execute(f"SHOW {name}")
        return int(cursor.fetchone()[0])


@db
@pytest.mark.postgresql
def test_capacity_reads_max_connections_from_postgresql() -> None:
    """max_connections comes from the server; the suite's pools fit under it."""
    default = capacity_of(advise_pools(local=True), "default")
    most = server_setting("max_connections")
    reserved = server_setting("superuser_reserved_connections")
    assert default["backend"] == "postgresql+psycopg"
    assert (default["max_connections"], default["reserved"]) == (most, reserved)
    assert default["usable"] == most - reserved
    assert default["headroom"] == most - reserved - 12  # main 10 + other 2, one server
    assert "error" not in default


@db
@pytest.mark.postgresql
def test_capacity_of_the_fleet_over_max_connections_is_critical(fleet_cache: Any) -> None:
    """Enough live processes to open more than the server allows: "critical", nothing opened."""
    most = server_setting("max_connections")
    processes = most // 12 + 1  # each may open main 10 + other 2
    for number in range(processes):
        publish(number)
    opened: list[int] = []
    event.listen(get_engine("main"), "connect", lambda *args: opened.append(1))
    found = advise_pools()
    default = capacity_of(found, "default")
    assert default["processes"] == processes
    assert default["demand"] == 12 * processes > default["usable"]
    [critical] = [a for a in found["advice"] if a["severity"] == "critical"]
    assert f"{processes} process(es) x (size + overflow) may open" in critical["message"]
    assert opened == [] or len(opened) <= 1  # at most the one that reads max_connections
