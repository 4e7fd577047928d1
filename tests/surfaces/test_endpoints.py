"""The JSON and Prometheus endpoints, and the django-health-check plugin."""

from __future__ import annotations

import asyncio
import copy
import re
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.contrib.auth.models import Permission, User
from django.test import AsyncClient, Client
from sqlalchemy import text

from mingus_sessions import get_circuit_breaker, session_scope
from mingus_sessions import views as endpoint_views
from mingus_sessions.errors import ConfigurationError
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


def _staff(
    client: Client,
    *,
    staff: bool = True,
    active: bool = True,
    permission: str | None = "view_connectionpool",
) -> None:
    """Log in a user; by default a staff user with the admin's view permission."""
    user = User.objects.create_user("op", password="pw", is_staff=staff, is_active=active)
    if permission is not None:
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label="mingus_sessions", codename=permission)
        )
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
    """With every connection of a pool held, health says degraded at once (not after
    POOL_TIMEOUT), with a 200: a busy process stays in its load balancer; ?strict=1 is 503."""
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
        strict = client.get("/health/database?strict=1")
        head = client.head("/health/database?strict=true")
    finally:
        hold.set()
        for thread in threads:
            thread.join(10)
    assert elapsed < 2.0
    assert response.status_code == 200
    assert response.json()["status"] == "degraded"
    assert response.json()["connection_pools"]["other"]["status"] == "degraded"
    assert strict.status_code == 503
    assert strict.json()["status"] == "degraded"
    assert head.status_code == 503


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


#: Settings that cannot be parsed, and the check id that names what is wrong. The first
#: puts a database URL, password included, where a dict of pools belongs.
BROKEN_SETTINGS = [
    pytest.param(
        {"POOLS": f"postgresql://app:{PASSWORD_SENTINEL}@db.internal/app"},
        "mingus_sessions.E003",
        id="pools-not-a-dict",
    ),
    pytest.param(
        {"POOLS": {"main": {"DATABASE": "nowhere"}}},
        "mingus_sessions.E005",
        id="pool-on-a-missing-alias",
    ),
]


@pytest.fixture
def server() -> Client:
    """A test client that answers as a server would, an error page for an exception."""
    return Client(raise_request_exception=False)


@pytest.mark.parametrize(("broken", "check_id"), BROKEN_SETTINGS)
def test_health_answers_json_503_naming_broken_settings(
    server: Client, settings: Any, broken: dict[str, Any], check_id: str
) -> None:
    """Invalid settings: a JSON 503 naming their check id, never an HTML 500, and no secret."""
    settings.MINGUS_SESSIONS = {**copy.deepcopy(django_settings.MINGUS_SESSIONS), **broken}
    response = server.get("/health/database")
    assert response.status_code == 503
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert body.pop("timestamp")
    assert body == {
        "status": "unhealthy",
        "session_manager": {"status": "unhealthy"},
        "connection_pools": {},
        "error": f"invalid settings ({check_id}): run manage.py check",
    }
    assert PASSWORD_SENTINEL not in response.content.decode()
    assert "no-cache" in response["Cache-Control"]


def test_with_broken_settings_only_requests_using_their_session_fail(
    client: Client, settings: Any
) -> None:
    """SessionMiddleware serves requests that never open their session, sync and async alike.

    A request that opens it gets the settings' error, as before.
    """
    settings.MINGUS_SESSIONS = {"POOLS": "not a dict"}
    assert client.get("/no-database/").status_code == 200

    async def served_async() -> tuple[int, int]:
        async_client = AsyncClient()
        plain = await async_client.get("/async/no-database/")
        health = await async_client.get("/health/database")
        return plain.status_code, health.status_code

    assert asyncio.run(served_async()) == (200, 503)
    with pytest.raises(ConfigurationError, match=re.escape("[mingus_sessions.E003]")):
        client.get("/write/refused/")


def test_health_answers_json_503_when_the_check_itself_fails(
    server: Client, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A failure anywhere in the health view: a JSON 503 naming the error's class, logged."""

    def broken(timeout: float) -> dict[str, Any]:
        raise TypeError(f"a bug that knows {PASSWORD_SENTINEL}")

    monkeypatch.setattr(endpoint_views, "check_all_pools", broken)
    response = server.get("/health/database")
    assert response.status_code == 503
    assert response.json()["error"] == "the health check failed (TypeError)"
    assert PASSWORD_SENTINEL not in response.content.decode()
    assert "health/database: the health check failed" in caplog.text


def _head_and_get(client: Client) -> tuple[Any, Any]:
    return client.head("/health/database"), client.get("/health/database")


def _same_headers(head: Any, get: Any) -> None:
    # Expires is "now" to the second (never_cache): the two may straddle one.
    assert head.headers.keys() == get.headers.keys()
    assert {k: v for k, v in head.headers.items() if k != "Expires"} == {
        k: v for k, v in get.headers.items() if k != "Expires"
    }


def test_head_answers_like_get_without_a_body(client: Client, rf: Any, settings: Any) -> None:
    """HEAD gets GET's status and headers, Content-Length included, and no body.

    Healthy, unhealthy and with broken settings alike; the view itself sends
    no body (the test client, like most servers, would drop one).
    """
    head, get = _head_and_get(client)
    assert (head.status_code, get.status_code) == (200, 200)
    _same_headers(head, get)
    assert head["Content-Length"] == str(len(get.content))
    assert head.content == b""

    breaker = get_circuit_breaker("other")
    for _ in range(breaker.failure_threshold):
        breaker.record_failure()
    head, get = _head_and_get(client)
    assert (head.status_code, get.status_code) == (503, 503)
    _same_headers(head, get)
    assert head.content == b""

    settings.MINGUS_SESSIONS = {"POOLS": "not a dict"}
    head, get = _head_and_get(client)
    assert (head.status_code, get.status_code) == (503, 503)
    _same_headers(head, get)
    assert head.content == b""
    assert endpoint_views.health(rf.head("/health/database")).content == b""


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
    """A wrong token, a logged-in user who is not staff, or staff without the admin's view
    permission (whom the admin page refuses too): 403."""
    assert client.get(url, HTTP_AUTHORIZATION="Bearer wrong").status_code == 403
    _staff(client, staff=False)
    assert client.get(url).status_code == 403
    User.objects.all().delete()
    _staff(client, permission=None)
    assert client.get(url).status_code == 403
    assert client.get("/admin/mingus_sessions/connectionpool/").status_code == 403


@pytest.mark.parametrize("url", PROTECTED)
def test_another_authorization_scheme_leaves_it_to_the_logged_in_user(
    client: Client, url: str, with_token: None
) -> None:
    """Basic auth that a proxy passes on is not a wrong token: a staff session still gets in."""
    basic = "Basic b3A6cHc="  # op:pw
    assert client.get(url, HTTP_AUTHORIZATION=basic).status_code == 401
    _staff(client)
    assert client.get(url, HTTP_AUTHORIZATION=basic).status_code == 200


def test_a_non_ascii_token_works_nowhere(client: Client, settings: Any) -> None:
    """A METRICS_TOKEN that gunicorn could never match is refused in the test client too.

    The test client passes the header's text as it is, where a WSGI server
    decodes the client's bytes as Latin-1: the settings' error, not a token
    that works only in tests.
    """
    token = "jeton-sécurité-ß"
    settings.MINGUS_SESSIONS = {
        **copy.deepcopy(django_settings.MINGUS_SESSIONS),
        "METRICS_TOKEN": token,
    }
    with pytest.raises(ConfigurationError, match=re.escape("[mingus_sessions.E016]")):
        client.get("/metrics/database", HTTP_AUTHORIZATION=f"Bearer {token}")


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


@pytest.mark.parametrize("permission", ["view_connectionpool", "change_connectionpool"])
@pytest.mark.parametrize("url", PROTECTED)
def test_the_admins_permission_opens_the_metrics(client: Client, url: str, permission: str) -> None:
    """The view permission, or the change permission that implies it, as for the admin page."""
    _staff(client, permission=permission)
    assert client.get(url).status_code == 200
    assert client.get("/admin/mingus_sessions/connectionpool/").status_code == 200


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
    """The endpoints only answer GET (and HEAD)."""
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


def test_health_check_plugin_names_broken_settings(server: Client, settings: Any) -> None:
    """With invalid settings PoolHealthCheck is unavailable naming their check id, not 'unknown'."""
    settings.MINGUS_SESSIONS = {
        **copy.deepcopy(django_settings.MINGUS_SESSIONS),
        "POOLS": f"postgresql://app:{PASSWORD_SENTINEL}@db.internal/app",
    }
    response = server.get("/ht/", HTTP_ACCEPT="application/json")
    assert response.status_code == 500
    assert response.json() == {
        f"PoolHealthCheck(pool='{pool}')": f"Unavailable: pool {pool}: invalid settings "
        "(mingus_sessions.E003): run manage.py check"
        for pool in ("main", "other")
    }
