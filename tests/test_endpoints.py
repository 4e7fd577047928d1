"""The JSON and Prometheus endpoints, and the django-health-check plugin."""

from __future__ import annotations

import copy
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.contrib.auth.models import User
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from mingus_sessions import get_circuit_breaker, session_scope
from mingus_sessions import views as endpoint_views
from tests.helpers import add_alias
from tests.settings import PASSWORD_SENTINEL

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "other"])

TOKEN = "metrics-token-for-tests-0123456789"
PROTECTED = ["/metrics/database", "/metrics/database/prometheus", "/dashboard/database"]


@pytest.fixture
def with_token(settings: Any) -> None:
    config = copy.deepcopy(django_settings.MINGUS_SESSIONS)
    config["METRICS_TOKEN"] = TOKEN
    settings.MINGUS_SESSIONS = config


def _staff(client: Client, *, staff: bool = True, active: bool = True) -> None:
    user = User.objects.create_user("op", password="pw", is_staff=staff, is_active=active)
    client.force_login(user)


def _traffic() -> None:
    for _ in range(3):
        with session_scope() as session:
            session.execute(text("SELECT 1"))


def test_health_is_public_and_coarse(client: Client) -> None:
    """Anonymous callers get the seeds' shape with statuses only, and 200 when healthy."""
    _traffic()
    response = client.get("/health/database")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"status", "session_manager", "connection_pools", "timestamp"}
    assert body["status"] == "healthy"
    assert body["session_manager"] == {"status": "healthy"}
    assert body["connection_pools"] == {
        "main": {"status": "healthy"},
        "other": {"status": "healthy"},
    }
    assert "no-cache" in response["Cache-Control"]


def test_health_detail_for_staff_and_token(client: Client, with_token: None) -> None:
    """Staff users and token bearers also get each pool's detail and the session counts."""
    by_token = client.get("/health/database", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").json()
    assert by_token["connection_pools"]["main"]["detail"] == "ok"
    assert "sessions" in by_token["session_manager"]
    _staff(client)
    by_staff = client.get("/health/database").json()
    assert "utilization" in by_staff["connection_pools"]["other"]


def test_health_is_503_when_a_breaker_is_open(client: Client) -> None:
    """An open breaker makes its pool unhealthy and the endpoint 503, without connecting."""
    breaker = get_circuit_breaker("other")
    for _ in range(breaker.failure_threshold):
        breaker.record_failure()
    started = time.monotonic()
    response = client.get("/health/database")
    assert time.monotonic() - started < 2.0
    assert response.status_code == 503
    assert response.json()["connection_pools"]["other"] == {"status": "unhealthy"}
    assert response.json()["status"] == "unhealthy"


def test_health_answers_fast_when_a_pool_is_exhausted(client: Client) -> None:
    """With every connection of a pool held, health says 503 at once, not after POOL_TIMEOUT."""
    hold = threading.Event()
    held = threading.Barrier(3)

    def holder() -> None:
        with session_scope("other") as session:
            session.execute(text("SELECT 1"))
            held.wait(10)
            hold.wait(10)

    threads = [threading.Thread(target=holder) for _ in range(2)]
    for thread in threads:
        thread.start()
    held.wait(10)
    try:
        started = time.monotonic()
        response = client.get("/health/database")
        elapsed = time.monotonic() - started
    finally:
        hold.set()
        for thread in threads:
            thread.join(10)
    assert elapsed < 2.0
    assert response.status_code == 503
    assert response.json()["connection_pools"]["other"]["status"] == "degraded"


@pytest.fixture
def hung_database(settings: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A pool on a server that accepts TCP connections and never answers (R4)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    add_alias(
        monkeypatch,
        "hung",
        {
            **django_settings.DATABASES["default"],
            "ENGINE": "django.db.backends.postgresql",
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "NAME": "hung",
            "USER": "postgres",
            "PASSWORD": "",
            "OPTIONS": {},
            "TEST": {},
        },
    )
    config = copy.deepcopy(django_settings.MINGUS_SESSIONS)
    config["POOLS"]["hung"] = {"DATABASE": "hung", "CONNECT_ARGS": {"connect_timeout": 5}}
    settings.MINGUS_SESSIONS = config
    monkeypatch.setattr(endpoint_views, "HEALTH_TIMEOUT", 1.0)
    yield
    listener.close()


@pytest.mark.usefixtures("hung_database")
def test_health_has_a_deadline_when_the_database_hangs(client: Client) -> None:
    """R4: a database that never answers makes health unhealthy within its own deadline."""
    started = time.monotonic()
    response = client.get("/health/database")
    elapsed = time.monotonic() - started
    assert 1.0 <= elapsed < 2.5
    assert response.status_code == 503
    assert response.json()["connection_pools"]["hung"] == {"status": "unhealthy"}


@pytest.mark.parametrize("url", PROTECTED)
def test_protected_endpoints_refuse_without_credentials(client: Client, url: str) -> None:
    """No credentials: 401 with a Bearer challenge."""
    response = client.get(url)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("url", PROTECTED)
def test_protected_endpoints_refuse_wrong_credentials(
    client: Client, url: str, with_token: None
) -> None:
    """A wrong token, or a logged-in user who is not staff: 403."""
    assert client.get(url, HTTP_AUTHORIZATION="Bearer wrong").status_code == 403
    _staff(client, staff=False)
    assert client.get(url).status_code == 403


@pytest.mark.parametrize("url", PROTECTED)
def test_another_authorization_scheme_leaves_it_to_the_logged_in_user(
    client: Client, url: str, with_token: None
) -> None:
    """Basic auth that a proxy passes on is not a wrong token: a staff session still gets in."""
    basic = "Basic b3A6cHc="  # op:pw
    assert client.get(url, HTTP_AUTHORIZATION=basic).status_code == 401
    _staff(client)
    assert client.get(url, HTTP_AUTHORIZATION=basic).status_code == 200


def test_token_refused_when_none_is_configured(client: Client) -> None:
    """Without METRICS_TOKEN no bearer token is accepted."""
    response = client.get("/metrics/database", HTTP_AUTHORIZATION="Bearer anything")
    assert response.status_code == 403


@pytest.mark.parametrize("url", PROTECTED)
def test_protected_endpoints_answer_staff_and_token(
    client: Client, url: str, with_token: None
) -> None:
    """Staff users and bearers of METRICS_TOKEN get the data, never cached."""
    _traffic()
    response = client.get(url, HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    _staff(client)
    assert client.get(url).status_code == 200


def test_metrics_json_shape(client: Client) -> None:
    """metrics/database carries every pool's PoolMetrics, the performance figures and timestamp."""
    _traffic()
    _staff(client)
    body = client.get("/metrics/database").json()
    assert set(body) == {"pool_metrics", "performance_metrics", "transactions", "timestamp"}
    main = body["pool_metrics"]["main"]
    assert main["checkouts"] >= 3
    assert set(main["acquire_wait_ms"]) == {"p50", "p95", "p99", "max", "count"}
    assert body["performance_metrics"]["total_checkouts"] >= 3


def test_prometheus_endpoint_parses(client: Client) -> None:
    """The Prometheus endpoint serves the text format that prometheus_client parses."""
    _traffic()
    _staff(client)
    response = client.get("/metrics/database/prometheus")
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(response.content.decode())}
    used = [
        s for s in families["db_client_connection_count"].samples if s.labels["state"] == "used"
    ]
    assert {s.labels["pool"] for s in used} == {"main", "other"}


def test_dashboard_kpis(client: Client) -> None:
    """dashboard/database has the seeds' KPIs and per-pool health and gauges."""
    _traffic()
    _staff(client)
    body = client.get("/dashboard/database").json()
    assert set(body["kpis"]) == {
        "total_connections",
        "active_connections",
        "connection_utilization",
        "error_rate",
        "average_checkout_time",
    }
    assert body["pools"]["main"]["health"] == "healthy"
    assert set(body["pools"]["main"]["metrics"]) == {
        "pool_size",
        "checked_out",
        "checked_in",
        "overflow",
        "errors",
    }


def test_no_password_in_any_endpoint(
    client: Client, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """S1: a database password appears in no endpoint, even for staff."""
    add_alias(
        monkeypatch,
        "secret",
        {
            **django_settings.DATABASES["default"],
            "ENGINE": "django.db.backends.postgresql",
            "HOST": "127.0.0.1",
            "PORT": "1",
            "NAME": "secret",
            "USER": "app",
            "PASSWORD": PASSWORD_SENTINEL,
            "OPTIONS": {},
            "TEST": {},
        },
    )
    config = copy.deepcopy(django_settings.MINGUS_SESSIONS)
    config["POOLS"]["secret"] = {"DATABASE": "secret"}
    settings.MINGUS_SESSIONS = config
    _staff(client)
    for url in ["/health/database", *PROTECTED]:
        assert PASSWORD_SENTINEL not in client.get(url).content.decode(), url


def test_methods_other_than_get_are_refused(client: Client) -> None:
    """The endpoints only answer GET."""
    assert client.post("/health/database").status_code == 405


def test_health_check_plugin_healthy(client: Client) -> None:
    """PoolHealthCheck works in django-health-check 4.x's HealthCheckView."""
    response = client.get("/ht/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    body = response.json()
    assert any("main" in key for key in body), body


def test_health_check_plugin_unavailable_when_breaker_open(client: Client) -> None:
    """An open breaker makes PoolHealthCheck fail (ServiceUnavailable): 500 from the view."""
    breaker = get_circuit_breaker("main")
    for _ in range(breaker.failure_threshold):
        breaker.record_failure()
    response = client.get("/ht/", HTTP_ACCEPT="application/json")
    assert response.status_code == 500
    assert "circuit breaker open" in response.content.decode()
