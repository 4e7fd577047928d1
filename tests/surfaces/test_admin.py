"""The admin's "Connection pools" (docs/reliability.md S1, S3, S4) through Django's test client.

Pages: who gets in (S3), what the dashboard and the pool page show, that they
are never cached and never query a table. Actions: POST with CSRF and the
change permission only, logged with the user, GET changes nothing (S4). The
sentinel password of an extra alias appears on no page (S1).
"""

from __future__ import annotations

import copy
import os
import re
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.admin.utils import quote
from django.contrib.auth.models import Permission, User
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from sqlalchemy import text

from mingus_sessions import get_circuit_breaker, get_engine, monitor, session_scope
from mingus_sessions.admin.charts import (
    Line,
    format_ms,
    format_percent,
    line_chart,
    utilization_bar,
)
from mingus_sessions.metrics import get_pool_metrics, start_monitoring, stop_monitoring
from mingus_sessions.models import ConnectionPool
from tests.helpers import add_alias
from tests.settings import PASSWORD_SENTINEL

pytestmark = pytest.mark.django_db(databases=["default", "other"])

BASE = "/admin/mingus_sessions/connectionpool/"
DASHBOARD = BASE
POOL_PAGE = BASE + "pool/{}/"
ACTION_URLS = [
    BASE + "pool/main/reset/",
    BASE + "pool/main/dispose/",
    BASE + "pool/main/reset-breaker/",
    BASE + "reset-all/",
    BASE + "dispose-all/",
]
#: This process's page (it is in the fleet: opening a page starts its sampler).
PROCESS_PAGE = BASE + f"process/{quote(socket.gethostname())}/{os.getpid()}/"
PAGES = [DASHBOARD, POOL_PAGE.format("main"), POOL_PAGE.format("other"), PROCESS_PAGE]


@pytest.fixture(autouse=True)
def _no_sampler() -> Iterator[None]:
    """No sampler before the test (the middleware starts one), none left after it."""
    stop_monitoring()
    yield
    stop_monitoring()


def configure(settings: Any, pools: dict[str, Any] | None = None, **top: Any) -> None:
    config = copy.deepcopy(django_settings.MINGUS_SESSIONS)
    config["POOLS"].update(pools or {})
    config.update(top)
    settings.MINGUS_SESSIONS = config


def make_user(
    name: str, *, staff: bool = True, active: bool = True, perms: tuple[str, ...] = ()
) -> User:
    user = User.objects.create_user(name)  # no password: force_login needs none, hashing is slow
    user.is_staff = staff
    user.is_active = active
    user.save()
    for codename in perms:
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label="mingus_sessions", codename=codename)
        )
    return user


def client_for(user: User, **kwargs: Any) -> Client:
    client = Client(**kwargs)
    client.force_login(user)
    return client


@pytest.fixture
def viewer() -> Client:
    return client_for(make_user("viewer", perms=("view_connectionpool",)))


@pytest.fixture
def changer_user() -> User:
    return make_user("changer", perms=("change_connectionpool",))


@pytest.fixture
def changer(changer_user: User) -> Client:
    return client_for(changer_user)


def use_pools(times: int = 3) -> None:
    """Some real traffic on both pools, so that the counters are not zero."""
    for _ in range(times):
        for pool in ("main", "other"):
            with session_scope(pool) as session:
                session.execute(text("SELECT 1"))


def log_entries() -> list[LogEntry]:
    content_type = ContentType.objects.get_for_model(ConnectionPool)
    return list(LogEntry.objects.filter(content_type=content_type).order_by("id"))


# -- S3: who gets in ---------------------------------------------------------------------------


@pytest.mark.parametrize("url", [*PAGES])
def test_anonymous_is_sent_to_login(client: Client, url: str) -> None:
    """An anonymous visitor of any pool page is redirected to the admin login."""
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/?next=")


@pytest.mark.parametrize("url", ACTION_URLS)
def test_anonymous_post_is_sent_to_login_and_changes_nothing(client: Client, url: str) -> None:
    """An anonymous POST to an action is redirected to the login and logs nothing."""
    use_pools()
    before = get_pool_metrics("main").checkouts
    response = client.post(url)
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")
    assert get_pool_metrics("main").checkouts == before
    assert log_entries() == []


@pytest.mark.parametrize(
    ("staff", "active"), [(False, True), (True, False)], ids=["non-staff", "inactive-staff"]
)
def test_non_staff_and_inactive_are_sent_to_login(staff: bool, active: bool) -> None:
    """A non-staff user, and an inactive staff user, even with the permissions, get the login."""
    user = make_user(
        "someone",
        staff=staff,
        active=active,
        perms=("view_connectionpool", "change_connectionpool"),
    )
    client = client_for(user)
    for url in PAGES:
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith("/admin/login/?next=")
    response = client.post(ACTION_URLS[0])
    assert response.status_code == 302
    assert log_entries() == []


def test_staff_without_permission_gets_403_and_no_index_entry() -> None:
    """Staff without the view permission are refused (403) and not shown the model on the index."""
    client = client_for(make_user("plain"))
    for url in PAGES:
        assert client.get(url).status_code == 403, url
    assert client.post(ACTION_URLS[0]).status_code == 403
    index = client.get("/admin/")
    assert index.status_code == 200
    assert "Connection pools" not in index.content.decode()


def test_index_lists_connection_pools_for_viewers(viewer: Client) -> None:
    """The admin index shows "Connection pools", linked to the dashboard, with no add link."""
    page = viewer.get("/admin/").content.decode()
    assert "Connection pools" in page
    assert f'href="{DASHBOARD}"' in page
    assert BASE + "add/" not in page


def test_app_index_lists_connection_pools(viewer: Client) -> None:
    """The "Database sessions" app page lists the model and links to the dashboard."""
    response = viewer.get("/admin/mingus_sessions/")
    assert response.status_code == 200
    assert f'href="{DASHBOARD}"' in response.content.decode()


def test_permissions_are_view_and_change_only() -> None:
    """The model's permissions are exactly mingus_sessions.view_ and change_connectionpool."""
    codenames = set(
        Permission.objects.filter(content_type__app_label="mingus_sessions").values_list(
            "codename", flat=True
        )
    )
    assert codenames == {"view_connectionpool", "change_connectionpool"}
    assert ConnectionPool._meta.managed is False
    assert str(ConnectionPool._meta.verbose_name_plural) == "connection pools"


@pytest.mark.parametrize("url", PAGES)
def test_pages_are_never_cached(viewer: Client, url: str) -> None:
    """Every page says no-cache, no-store, must-revalidate, private."""
    response = viewer.get(url)
    assert response.status_code == 200
    cache_control = {part.strip() for part in response["Cache-Control"].split(",")}
    assert {"no-cache", "no-store", "must-revalidate", "private"} <= cache_control
    assert "Expires" in response


# -- what the pages show -----------------------------------------------------------------------


def test_dashboard_shows_every_pool_the_charts_and_the_fleet(viewer: Client) -> None:
    """The dashboard lists each pool's settings, gauges, timings, counters, charts and the fleet."""
    use_pools()
    response = viewer.get(DASHBOARD)
    assert response.status_code == 200
    page = response.content.decode()
    for name in ("main", "other"):
        assert f'href="{POOL_PAGE.format(name)}"' in page
    for heading in (
        "Configuration",
        "Connections now",
        "Wait, hold and connect times",
        "Counters and circuit breaker",
        "Over time",
        "Fleet",
    ):
        assert heading in page
    assert 'id="fleet-table"' in page
    assert "(this process)" in page  # the sampler published this process at once
    assert page.count("<svg") >= 2 + 2  # two charts, a bar per pool
    assert "<title" in page
    assert "<desc" in page
    assert "utilization" in page
    assert "acquire wait p99 (ms)" in page
    assert "<polyline" in page  # the sampler's first point
    assert "closed" in page  # breaker state
    assert response.context["pools"][0].metrics["checkouts"] == 3
    assert [row.metrics["name"] for row in response.context["pools"]] == ["main", "other"]


def test_dashboard_and_pool_page_query_no_model_table(viewer: Client) -> None:
    """Rendering the pages never touches a connection-pool table (there is none)."""
    with CaptureQueriesContext(connection) as queries:
        assert viewer.get(DASHBOARD).status_code == 200
        assert viewer.get(POOL_PAGE.format("main")).status_code == 200
    assert queries.captured_queries  # sessions and users, through Django
    assert not [q for q in queries.captured_queries if "connectionpool" in q["sql"].lower()]


def test_dashboard_charts_fill_from_the_series(viewer: Client, settings: Any) -> None:
    """With a fast sampler the charts draw a line of several points per pool."""
    configure(settings, FLEET={"CACHE": "default", "INTERVAL": 0.05})
    assert start_monitoring(role="web") is True
    use_pools()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        series = monitor.get_time_series()
        if all(len(series.get(name, [])) >= 4 for name in ("main", "other")):
            break
        time.sleep(0.02)
    page = viewer.get(DASHBOARD).content.decode()
    lines = re.findall(r'<polyline points="([^"]+)"', page)
    assert len(lines) == 4  # utilization and acquire p99, for each of two pools
    assert all(len(points.split()) >= 4 for points in lines)
    assert "Monitoring runs in this process" in page


def test_opening_the_dashboard_starts_monitoring(viewer: Client, settings: Any) -> None:
    """Without the middleware, opening the dashboard starts the sampler and says so."""
    settings.MIDDLEWARE = [
        m for m in settings.MIDDLEWARE if m != "mingus_sessions.middleware.SessionMiddleware"
    ]
    assert not monitor.is_monitoring()
    page = viewer.get(DASHBOARD).content.decode()
    assert monitor.is_monitoring()
    assert "opening this page started it" in page


def test_dashboard_says_when_monitoring_is_off(viewer: Client, settings: Any) -> None:
    """With MONITORING off the dashboard still renders the gauges and says monitoring is off."""
    configure(settings, MONITORING=False)
    use_pools(1)
    response = viewer.get(DASHBOARD)
    assert response.status_code == 200
    page = response.content.decode()
    assert "Monitoring is off" in page
    assert not monitor.is_monitoring()
    assert "No samples yet" in page
    assert POOL_PAGE.format("other") in page
    assert viewer.get(POOL_PAGE.format("main")).status_code == 200


def test_pool_page_shows_one_pool_slow_queries_and_leaks(viewer: Client, settings: Any) -> None:
    """The pool page shows that pool only, its slowest statements without parameters, leaks."""
    configure(settings, SLOW_QUERY_THRESHOLD=0.000001)
    with session_scope("main") as session:
        session.execute(text("SELECT :marker AS marker_column"), {"marker": "bound-param-xyz"})
    response = viewer.get(POOL_PAGE.format("main"))
    assert response.status_code == 200
    page = response.content.decode()
    assert "Connection pool main" in page
    assert POOL_PAGE.format("other") not in page
    assert "marker_column" in page  # the statement ...
    assert "bound-param-xyz" not in page  # ... never its parameters
    assert "Parameters:" not in page
    assert 'id="leak-summary"' in page
    assert "0 connections reported held past the leak threshold" in page
    assert "<svg" in page
    assert 'id="fleet-table"' in page
    assert f'action="{BASE}' not in page  # view permission only: no action forms


def test_pool_page_shows_parameters_when_logging_them_is_on(viewer: Client, settings: Any) -> None:
    """With LOG_QUERY_PARAMETERS the slowest list shows a statement's parameters."""
    configure(settings, SLOW_QUERY_THRESHOLD=0.000001, LOG_QUERY_PARAMETERS=True)
    with session_scope("main") as session:
        session.execute(text("SELECT :marker AS marker_column"), {"marker": "shown-param-xyz"})
    page = viewer.get(POOL_PAGE.format("main")).content.decode()
    assert "Parameters:" in page
    assert "shown-param-xyz" in page


def test_pool_page_counts_leaks_and_connections_held_now(viewer: Client, settings: Any) -> None:
    """A connection held past LEAK_THRESHOLD shows in the leak count and the held list."""
    configure(settings, LEAK_THRESHOLD=0.05)
    engine = get_engine("main")
    held = engine.connect()
    try:
        time.sleep(0.1)
        assert start_monitoring() is True  # its first sample reports the leak
        page = viewer.get(POOL_PAGE.format("main")).content.decode()
    finally:
        held.close()
    assert "1 connection reported held past the leak threshold" in page
    assert "Checked out now: 1" in page


def test_unknown_pool_page_is_404(viewer: Client, changer: Client) -> None:
    """A pool name that is not configured is a 404, for pages and actions."""
    assert viewer.get(POOL_PAGE.format("nope")).status_code == 404
    assert changer.post(BASE + "pool/nope/reset/").status_code == 404
    assert log_entries() == []


# -- S4: actions -------------------------------------------------------------------------------


def test_viewer_sees_no_buttons_and_is_refused_every_action(viewer: Client) -> None:
    """Staff with only the view permission see no action forms and get 403 on every POST."""
    use_pools()
    breaker = get_circuit_breaker("main")
    for _ in range(breaker.failure_threshold):
        breaker.record_failure()
    engine_pool = get_engine("main").pool
    page = viewer.get(DASHBOARD).content.decode()
    assert f'action="{BASE}' not in page
    assert "Reset metrics" not in page
    for url in ACTION_URLS:
        assert viewer.post(url).status_code == 403, url
    assert get_pool_metrics("main").checkouts == 3
    assert get_engine("main").pool is engine_pool
    assert breaker.state == "open"
    assert log_entries() == []


@pytest.mark.parametrize("url", ACTION_URLS)
def test_get_on_an_action_is_405_and_changes_nothing(changer: Client, url: str) -> None:
    """A GET (or HEAD) to an action URL answers 405 and leaves the pools alone."""
    use_pools()
    engine_pool = get_engine("main").pool
    response = changer.get(url)
    assert response.status_code == 405
    assert response["Allow"] == "POST"
    assert changer.head(url).status_code == 405
    assert get_pool_metrics("main").checkouts == 3
    assert get_engine("main").pool is engine_pool
    assert log_entries() == []


@pytest.mark.parametrize("url", ACTION_URLS)
def test_post_without_csrf_token_is_403(changer_user: User, url: str) -> None:
    """With CSRF checks enforced, a POST without the token is refused and changes nothing."""
    use_pools()
    client = client_for(changer_user, enforce_csrf_checks=True)
    response = client.post(url)
    assert response.status_code == 403
    assert get_pool_metrics("main").checkouts == 3
    assert log_entries() == []


def test_post_with_csrf_token_from_the_page_works(changer_user: User) -> None:
    """With CSRF checks enforced, the form's own token is accepted."""
    use_pools()
    client = client_for(changer_user, enforce_csrf_checks=True)
    page = client.get(DASHBOARD).content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    assert token is not None
    response = client.post(ACTION_URLS[0], {"csrfmiddlewaretoken": token.group(1)})
    assert response.status_code == 302
    assert get_pool_metrics("main").checkouts == 0


def test_change_permission_shows_the_buttons(changer: Client) -> None:
    """Staff with the change permission see a form for each action of each pool, and for all."""
    page = changer.get(DASHBOARD).content.decode()
    for url in ACTION_URLS:
        assert f'action="{url}"' in page
    assert 'name="csrfmiddlewaretoken"' in page
    pool_page = changer.get(POOL_PAGE.format("other")).content.decode()
    for action in ("reset", "dispose", "reset-breaker"):
        assert f'action="{BASE}pool/other/{action}/"' in pool_page
    assert 'name="next" value="pool"' in pool_page


def test_reset_one_pool(changer: Client, changer_user: User) -> None:
    """POST reset zeroes that pool's counters only, logs it with the user, redirects, says so."""
    use_pools()
    response = changer.post(BASE + "pool/main/reset/")
    assert response.status_code == 302
    assert response["Location"] == DASHBOARD
    main, other = get_pool_metrics("main"), get_pool_metrics("other")
    assert (main.checkouts, main.acquire_wait_ms.count, main.hold_ms.count) == (0, 0, 0)
    assert other.checkouts == 3
    [entry] = log_entries()
    assert entry.user_id == changer_user.pk
    assert entry.object_id == "main"
    assert entry.object_repr == "main"
    assert entry.action_flag == CHANGE
    assert entry.change_message == 'Reset the metrics of pool "main".'
    assert entry.get_admin_url() == POOL_PAGE.format("main")
    followed = changer.get(response["Location"]).content.decode()
    assert "Reset the metrics of pool &quot;main&quot;." in followed
    index = changer.get("/admin/").content.decode()  # "Recent actions" links to the pool
    assert f'href="{POOL_PAGE.format("main")}"' in index


def test_reset_all_pools(changer: Client, changer_user: User) -> None:
    """POST reset-all zeroes every pool and logs one entry per pool."""
    use_pools()
    response = changer.post(BASE + "reset-all/")
    assert response.status_code == 302
    assert all(m.checkouts == 0 for m in get_pool_metrics().values())
    entries = log_entries()
    assert [e.object_id for e in entries] == ["main", "other"]
    assert {e.user_id for e in entries} == {changer_user.pk}
    assert entries[0].change_message == 'Reset the metrics of every pool ("main", "other").'


def test_dispose_one_pool(changer: Client) -> None:
    """POST dispose replaces the pool's connection pool: nothing checked in, a new pool object."""
    use_pools()
    engine = get_engine("main")
    old_pool = engine.pool
    assert old_pool.checkedin() >= 1  # type: ignore[attr-defined]
    other_pool = get_engine("other").pool
    response = changer.post(BASE + "pool/main/dispose/", {"next": "pool"})
    assert response.status_code == 302
    assert response["Location"] == POOL_PAGE.format("main")
    assert engine.pool is not old_pool
    assert engine.pool.checkedin() == 0  # type: ignore[attr-defined]
    assert get_engine("other").pool is other_pool
    [entry] = log_entries()
    assert entry.change_message == 'Disposed the engine of pool "main".'
    use_pools(1)  # the pool works after
    followed = changer.get(response["Location"]).content.decode()
    assert "Disposed the engine of pool &quot;main&quot;." in followed


def test_dispose_all_pools(changer: Client) -> None:
    """POST dispose-all disposes every pool's engine and logs each."""
    use_pools()
    pools = {name: get_engine(name).pool for name in ("main", "other")}
    assert changer.post(BASE + "dispose-all/").status_code == 302
    for name, old in pools.items():
        assert get_engine(name).pool is not old
        assert get_pool_metrics(name).checked_in == 0
    assert [e.object_id for e in log_entries()] == ["main", "other"]


def test_reset_circuit_breaker(changer: Client) -> None:
    """POST reset-breaker closes an open breaker; the page showed it open before."""
    breaker = get_circuit_breaker("other")
    for _ in range(breaker.failure_threshold):
        breaker.record_failure()
    assert breaker.state == "open"
    page = changer.get(POOL_PAGE.format("other")).content.decode()
    assert 'class="breaker-open"' in page
    response = changer.post(BASE + "pool/other/reset-breaker/")
    assert response.status_code == 302
    assert breaker.state == "closed"
    assert breaker.failures == 0
    [entry] = log_entries()
    assert entry.object_id == "other"
    assert entry.change_message == 'Reset the circuit breaker of pool "other".'


# -- S1: no password on any page ---------------------------------------------------------------


@pytest.fixture
def secret_pool(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The alias "secret" with the sentinel password (a closed port) and a pool "secret" on it."""
    pytest.importorskip("psycopg")
    database = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "mingus_secret",
        "USER": "mingus_secret_user",
        "PASSWORD": PASSWORD_SENTINEL,
        "HOST": "127.0.0.1",
        "PORT": "9",
        "OPTIONS": {"connect_timeout": 2},
        # Django fills this in only for the aliases it configured at start; the
        # request handler reads it for every alias.
        "ATOMIC_REQUESTS": False,
    }
    add_alias(monkeypatch, "secret", database)
    configure(settings, {"secret": {"DATABASE": "secret", "POOL_SIZE": 1, "MAX_OVERFLOW": 0}})


@pytest.mark.usefixtures("secret_pool")
def test_sentinel_password_appears_on_no_page(changer: Client, settings: Any) -> None:
    """Dashboard, pool pages, index, messages and log: the sentinel password is nowhere."""
    configure(settings, FLEET={"CACHE": "default", "INTERVAL": 0.05})
    assert get_engine("secret").url.password == PASSWORD_SENTINEL  # it is configured
    use_pools(1)
    pages = []
    for url in (DASHBOARD, POOL_PAGE.format("secret"), POOL_PAGE.format("main"), "/admin/"):
        response = changer.get(url)
        assert response.status_code == 200, url
        pages.append(response.content.decode())
    assert "secret" in pages[0]  # the alias and pool are listed ...
    assert 'href="' + POOL_PAGE.format("secret") + '"' in pages[0]
    for url in (BASE + "pool/secret/dispose/", BASE + "reset-all/", BASE + "dispose-all/"):
        response = changer.post(url, follow=True)
        assert response.status_code == 200
        pages.append(response.content.decode())
    pages.append(changer.get("/admin/").content.decode())
    for page in pages:
        assert PASSWORD_SENTINEL not in page  # ... never its password
        assert "mingus_secret_user:" not in page
    assert PASSWORD_SENTINEL not in repr([e.__dict__ for e in log_entries()])


# -- the SVG charts, without Django ------------------------------------------------------------


def test_line_chart_is_accessible_svg_with_axes_and_escaped_text() -> None:
    """A chart has a title, a description with the latest values, axis labels, escaped text."""
    svg = line_chart(
        chart_id="c<1>",
        title="Wait & see",
        description="A <test> chart.",
        lines=[Line("a<b", [(0.0, 1.0), (10.0, 3.0)]), Line("empty", [])],
        y_label="ms",
        y_format=format_ms,
    )
    assert svg.startswith("<svg")
    assert svg.endswith("</svg>")
    assert 'role="img"' in svg
    assert 'aria-labelledby="c&lt;1&gt;-title c&lt;1&gt;-desc"' in svg
    assert "<title" in svg
    assert "Wait &amp; see" in svg
    assert "A &lt;test&gt; chart. Latest: a&lt;b: 3 ms." in svg
    assert "a<b" not in svg
    assert "<test>" not in svg
    assert ">ms</text>" in svg
    assert ">time (UTC)</text>" in svg
    assert svg.count("<polyline") == 1
    assert ">5 ms</text>" in svg  # the y axis rounds 3 up to 5


def test_line_chart_without_samples_says_so() -> None:
    """A chart with no points draws its axes and "No samples yet"."""
    svg = line_chart(
        chart_id="x",
        title="t",
        description="d.",
        lines=[Line("main", [])],
        y_label="y",
        y_format=format_ms,
    )
    assert "No samples yet" in svg
    assert "<polyline" not in svg


def test_utilization_bar_is_clamped_and_labelled() -> None:
    """The bar's fill is the ratio of its width, clamped to 0..1, with an accessible label."""
    assert 'width="50.0"' in utilization_bar(0.5)
    assert 'width="100.0"' in utilization_bar(3.0)
    assert 'aria-label="utilization 0 %"' in utilization_bar(-1)


def test_utilization_bar_parts_carry_the_classes_the_stylesheet_colours() -> None:
    """The empty track and the fill have classes (the theme's colours), the level included;
    the bar's value is its title, shown on hover."""
    assert 'class="mingus-bar-track"' in utilization_bar(0.5)
    assert "<title>utilization 50 %</title>" in utilization_bar(0.5)
    assert 'class="mingus-bar-fill mingus-bar-ok"' in utilization_bar(0.5)
    assert 'class="mingus-bar-fill mingus-bar-warn"' in utilization_bar(0.75)
    assert 'class="mingus-bar-fill mingus-bar-high"' in utilization_bar(0.95)


def test_line_chart_has_a_point_with_its_value_per_sample() -> None:
    """Every sample is a point whose title says the line, the value and the time; the chart's
    background, grid, axes and texts carry the classes that the stylesheet colours."""
    svg = line_chart(
        chart_id="c",
        title="t",
        description="d.",
        lines=[Line("main", [(0.0, 0.25), (10.0, 0.5), (20.0, 1.0)]), Line("b<", [(5.0, 0.0)])],
        y_label="utilization",
        y_format=format_percent,
        y_max=1.0,
    )
    titles = re.findall(r'<circle [^>]*class="(mingus-point[^"]*)"><title>([^<]*)</title>', svg)
    assert titles == [
        ("mingus-point mingus-series-0", "main: 25 % at 00:00:00 UTC"),
        ("mingus-point mingus-series-0", "main: 50 % at 00:00:10 UTC"),
        ("mingus-point mingus-latest mingus-series-0", "main: 100 % at 00:00:20 UTC"),
        ("mingus-point mingus-latest mingus-series-1", "b&lt;: 0 % at 00:00:05 UTC"),
    ]
    for part in ("mingus-chart-bg", "mingus-grid", "mingus-axis", "mingus-text"):
        assert f'class="{part}"' in svg


def test_odd_pool_names_are_quoted_and_escaped(changer: Client, settings: Any) -> None:
    """A pool name with a slash and markup gets working, quoted URLs and escaped text."""
    name = 'eu/<i>"x'
    configure(settings, {name: {"DATABASE": "default", "POOL_SIZE": 1, "MAX_OVERFLOW": 0}})
    page = changer.get(DASHBOARD).content.decode()
    assert "<i>" not in page
    assert "eu/&lt;i&gt;&quot;x" in page
    pool_url = POOL_PAGE.format("eu_2F_3Ci_3E_22x")
    assert f'href="{pool_url}"' in page
    assert changer.get(pool_url).status_code == 200
    response = changer.post(pool_url + "reset/", {"next": "pool"})
    assert response.status_code == 302
    assert response["Location"] == pool_url
    [entry] = log_entries()
    assert entry.object_id == name
    assert entry.get_admin_url() == pool_url
