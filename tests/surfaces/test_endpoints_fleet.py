"""The metrics, Prometheus and dashboard endpoints show the fleet; health probes are not
traffic.

The fleet here is a cache of the test's own with processes published by hand
next to this one (which the endpoints put in it, as the web process that
answers); gunicorn workers and a Celery worker scraped for real are in
tests/fleet.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from mingus_sessions import session_scope
from mingus_sessions.metrics import get_pool_metrics, stop_monitoring
from mingus_sessions.metrics._fleet import run_action
from tests.surfaces.helpers import FAKE_HOST, configure, publish

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "other"])

PROTECTED = ["/metrics/database", "/metrics/database/prometheus", "/dashboard/database"]
ME = (socket.gethostname(), os.getpid())


@pytest.fixture
def viewer(client: Client) -> Iterator[Client]:
    """A staff user with the admin's view permission, logged in."""
    user = User.objects.create_user("op", password="pw", is_staff=True)
    user.user_permissions.add(
        Permission.objects.get(
            content_type__app_label="mingus_sessions", codename="view_connectionpool"
        )
    )
    client.force_login(user)
    yield client
    stop_monitoring()


def traffic(pool: str | None = None, times: int = 3) -> None:
    for _ in range(times):
        with session_scope(pool) as session:
            session.execute(text("SELECT 1"))


def test_metrics_json_shape(viewer: Client, fleet_cache: Any) -> None:
    """metrics/database: the fleet's totals per pool, performance, transactions, each process."""
    traffic()
    body = viewer.get("/metrics/database").json()
    assert set(body) == {
        "pool_metrics",
        "performance_metrics",
        "transactions",
        "processes",
        "fleet",
        "timestamp",
    }
    main = body["pool_metrics"]["main"]
    assert main["checkouts"] == get_pool_metrics("main").checkouts >= 3  # read now, not stale
    assert set(main["acquire_wait_ms"]) == {"p50", "p95", "p99", "max", "count"}
    assert main["processes"] == 1
    assert body["performance_metrics"]["total_checkouts"] >= 3
    [mine] = body["processes"]
    assert ((mine["host"], mine["pid"]), mine["role"]) == (ME, "web")
    assert body["fleet"]["source"] == "fleet"


def test_every_endpoint_shows_every_live_process(viewer: Client, fleet_cache: Any) -> None:
    """Whichever process answers, the other processes of the fleet are in its answer."""
    traffic()
    publish(1, "worker", main={"checkouts": 100, "checked_out": 1})
    publish(2, "web", main={"checkouts": 50, "circuit_state": "open"})
    body = viewer.get("/metrics/database").json()
    listed = {(p["host"], p["pid"]) for p in body["processes"]}
    assert listed == {ME, (FAKE_HOST, 1001), (FAKE_HOST, 1002)}
    assert body["pool_metrics"]["main"]["checkouts"] == get_pool_metrics("main").checkouts + 150
    assert body["pool_metrics"]["main"]["processes"] == 3

    scrape = viewer.get("/metrics/database/prometheus").content.decode()
    families = {f.name: f for f in text_string_to_metric_families(scrape)}
    info = families["mingus_sessions_process_info"].samples
    assert {(s.labels["host"], s.labels["pid"], s.labels["role"]) for s in info} == {
        (ME[0], str(ME[1]), "web"),
        (FAKE_HOST, "1001", "worker"),
        (FAKE_HOST, "1002", "web"),
    }
    checkouts = {
        (s.labels["host"], s.labels["pid"]): s.value
        for s in families["mingus_sessions_pool_checkouts"].samples
        if s.labels["pool"] == "main"
    }
    assert checkouts[FAKE_HOST, "1001"] == 100

    dashboard = viewer.get("/dashboard/database").json()
    assert dashboard["kpis"]["active_connections"] == 1
    assert dashboard["pools"]["main"]["processes"] == 3
    assert dashboard["health_status"]["main"]["status"] == "unhealthy"
    assert dashboard["health_status"]["main"]["detail"] == (
        f"fleet: circuit breaker open in 1 of 3 process(es): {FAKE_HOST}:1002"
    )
    assert dashboard["fleet"]["processes"] == 3


def test_local_shows_the_answering_process_alone(viewer: Client, fleet_cache: Any) -> None:
    """?local=1: only the process that answers; a bad value is a 400 that says what to send."""
    publish(1, "worker")
    body = viewer.get("/metrics/database?local=1").json()
    assert [(p["host"], p["pid"]) for p in body["processes"]] == [ME]
    assert body["fleet"]["source"] == "local"
    scrape = viewer.get("/metrics/database/prometheus?local=1").content.decode()
    assert f'host="{FAKE_HOST}"' not in scrape
    response = viewer.get("/metrics/database?local=maybe")
    assert response.status_code == 400
    assert response.json()["error"] == "local must be 1 or 0"


def test_with_monitoring_off_the_answering_process_is_shown(viewer: Client, settings: Any) -> None:
    """No process publishes when MONITORING is off: the endpoints show the one that answers."""
    configure(settings, MONITORING=False)
    traffic()
    body = viewer.get("/metrics/database").json()
    assert [(p["host"], p["pid"]) for p in body["processes"]] == [ME]
    assert body["fleet"] == {
        "source": "local",
        "processes": 1,
        "note": "MONITORING is off: the answering process alone",
    }
    assert body["pool_metrics"]["main"]["pool_size"] == 5  # gauges and settings; no counters
    assert viewer.get("/metrics/database/prometheus").status_code == 200


@pytest.mark.usefixtures("unreachable_fleet")
@pytest.mark.parametrize("url", PROTECTED)
def test_an_unreachable_fleet_cache_is_a_503_in_one_line(viewer: Client, url: str) -> None:
    """The processes cannot be shown: 503 saying so in one line; ?local=1 still answers."""
    response = viewer.get(url)
    assert response.status_code == 503
    said = response.content.decode() if "prometheus" in url else response.json()["error"]
    assert said.strip().startswith('The FLEET cache "down" (RedisCache) cannot be reached')
    assert len(said.strip().splitlines()) == 1
    assert "Traceback" not in said
    assert viewer.get(url + "?local=1").status_code == 200


def test_the_dashboard_lists_the_fleets_actions(viewer: Client, fleet_cache: Any) -> None:
    """An action issued to the fleet: applied here at once, pending in the other process."""
    viewer.get("/dashboard/database")  # this process joins the fleet as the web process
    publish(1, "worker")
    report = run_action(["reset"], ["main"])
    [action] = viewer.get("/dashboard/database").json()["actions"]
    assert action["id"] == report.action["id"]
    assert action["do"] == ["reset"]
    assert action["applied"] == [f"{ME[0]}:{ME[1]}"]
    assert action["pending"] == [f"{FAKE_HOST}:1001"]


# -- health probes are not traffic -------------------------------------------------------------


def test_health_probes_do_not_count_as_checkouts(client: Client, settings: Any) -> None:
    """Twenty probes of /health/database leave every pool's checkouts, waits, holds and peak
    where the traffic left them; a pool no code uses stays at 0 checkouts."""
    traffic("main", 3)
    before = get_pool_metrics()
    for _ in range(20):
        assert client.get("/health/database").status_code == 200
    after = get_pool_metrics()
    for name in ("main", "other"):
        assert after[name].checkouts == before[name].checkouts, name
        assert after[name].acquire_wait_ms.count == before[name].acquire_wait_ms.count, name
        assert after[name].hold_ms.count == before[name].hold_ms.count, name
        assert after[name].peak_checked_out == before[name].peak_checked_out, name
    assert after["other"].checkouts == 0
    assert after["other"].peak_checked_out == 0


def test_health_strict_must_be_a_yes_or_a_no(client: Client) -> None:
    """?strict= something else than 1/0 (true/false, yes/no, on/off) is a JSON 400."""
    assert client.get("/health/database?strict=0").status_code == 200
    response = client.get("/health/database?strict=sometimes")
    assert response.status_code == 400
    assert response.json()["error"] == "strict must be 1 or 0"
