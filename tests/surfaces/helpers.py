"""What the metrics, monitoring, Prometheus and command tests share."""

from __future__ import annotations

import copy
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import pytest
from django.conf import settings as django_settings
from sqlalchemy import text

from mingus_sessions import get_engine, session_scope
from mingus_sessions.metrics import PoolMetrics, get_pool_metrics

BACKEND = os.environ.get("MINGUS_TEST_DATABASE", "sqlite")

EXPECTED_BACKEND = {
    "sqlite": "sqlite+pysqlite",
    "postgresql": "postgresql+psycopg",
    "mysql": "mysql+mysqldb",
}[BACKEND]

db = pytest.mark.django_db(transaction=True, databases=["default", "other"])

COUNTERS = (
    "connects",
    "connect_errors",
    "checkouts",
    "timeouts",
    "invalidations",
    "leaks",
    "slow_queries",
)

SESSION_KEYS = {
    "total_sessions",
    "active_sessions",
    "committed_transactions",
    "transaction_rollbacks",
    "failed_sessions",
    "savepoints",
    "retries",
}


def configure(settings: Any, pools: dict[str, Any] | None = None, **top: Any) -> dict[str, Any]:
    """The suite's MINGUS_SESSIONS plus ``pools`` and top-level keys ``top``."""
    config = copy.deepcopy(django_settings.MINGUS_SESSIONS)
    config["POOLS"].update(pools or {})
    config.update(top)
    settings.MINGUS_SESSIONS = config
    return config


def select_one(pool: str | None = None) -> None:
    """One scope of ``pool`` running ``SELECT 1``."""
    with session_scope(pool) as session:
        session.execute(text("SELECT 1"))


def assert_gauges_match_pool(name: str) -> PoolMetrics:
    """The snapshot's gauges are the queue pool's own accessors (at quiescence)."""
    pool = get_engine(name).pool
    metrics = get_pool_metrics(name)
    assert metrics.checked_out == pool.checkedout()  # type: ignore[attr-defined]
    assert metrics.checked_in == pool.checkedin()  # type: ignore[attr-defined]
    assert metrics.overflow == max(pool.overflow(), 0)  # type: ignore[attr-defined]
    assert metrics.total == metrics.checked_in + metrics.checked_out
    assert metrics.waiting == 0
    return metrics


def parse_iso(value: str) -> float:
    """The POSIX time of an ISO 8601 timestamp."""
    import datetime as dt

    return dt.datetime.fromisoformat(value).timestamp()


def wait_until(predicate: Callable[[], Any], timeout: float = 5.0, interval: float = 0.005) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` passes; whether it held at last."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def records(caplog: pytest.LogCaptureFixture, logger: str) -> list[logging.LogRecord]:
    """The captured records of ``logger``."""
    return [r for r in caplog.records if r.name == logger]


#: The host name of the processes that tests publish by hand.
FAKE_HOST = "fleet-host"


def publish(number: int, role: str = "web", **pools: dict[str, Any]) -> dict[str, Any]:
    """Publish process ``number`` of :data:`FAKE_HOST` to the FLEET cache: this process's
    snapshot, with the figures in ``pools`` ({pool: {field: value}}) set; returns it."""
    from mingus_sessions import fleet

    found = fleet.local_snapshot(role)
    found["host"], found["pid"] = FAKE_HOST, 1000 + number
    for name, figures in pools.items():
        found["pools"][name].update(figures)
    fleet.publish(fleet.fleet_cache(), found, 60)
    return found
