"""The admin's fleet through Django's test client: the fleet table, a page per process, honest
values during an outage and when the fleet cache is down, and the pages' live parts.

Every fault is real: a pool on a closed port (its breaker opens on real connection
errors), a fleet cache on a Redis port nothing listens on, a second process that
publishes to a real Redis and is then killed.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.contrib.admin.utils import quote
from django.contrib.auth.models import Permission, User
from django.core.cache import caches
from django.db import connections
from django.test import Client
from sqlalchemy import text

from mingus_sessions import get_circuit_breaker, get_engine, session_scope
from mingus_sessions.errors import DatabaseConnectionError
from mingus_sessions.metrics import get_fleet_metrics, start_monitoring, stop_monitoring
from tests.helpers import add_alias
from tests.surfaces.helpers import BACKEND, configure, wait_until

pytestmark = pytest.mark.django_db(databases=["default", "other"])

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BASE = "/admin/mingus_sessions/connectionpool/"
HOST = socket.gethostname()

#: The publishing interval of the test with two processes: the late marker shows between
#: two and three intervals of silence, a window wide enough to look into. (Whole seconds: a
#: Redis cache truncates an entry's lifetime of 3 intervals to whole seconds.)
INTERVAL = 1.0


def process_page(pid: int, host: str = HOST) -> str:
    return f"{BASE}process/{quote(host)}/{pid}/"


@pytest.fixture(autouse=True)
def _no_sampler() -> Iterator[None]:
    stop_monitoring()
    yield
    stop_monitoring()


@pytest.fixture
def viewer() -> Client:
    user = User.objects.create_user("fleet-viewer", is_staff=True)
    user.user_permissions.add(
        Permission.objects.get(
            content_type__app_label="mingus_sessions", codename="view_connectionpool"
        )
    )
    client = Client()
    client.force_login(user)
    return client


def fleet_rows(page: str) -> dict[str, list[str]]:
    """The fleet table's rows by "process/pool": the cells' texts after the pool's name (a bar's
    SVG left out)."""
    table = re.search(r'<table id="fleet-table".*?</table>', page, re.S)
    assert table is not None, "no fleet table"
    rows: dict[str, list[str]] = {}
    for body in re.findall(
        r'<tbody class="mingus-process" data-process="([^"]+)">(.*?)</tbody>', table.group(0), re.S
    ):
        process, html = body
        for row in re.findall(r"<tr>(.*?)</tr>", html, re.S):
            pool = re.search(r'<th scope="row">(.*?)</th>', row, re.S)
            if pool is None:
                continue
            after = row[pool.end() :]
            cells = [
                " ".join(
                    re.sub(r"<[^>]+>", " ", re.sub(r"<svg.*?</svg>", "", c, flags=re.S)).split()
                )
                for c in re.findall(r"<td[^>]*>(.*?)</td>", after, re.S)
            ]
            rows[f"{process}/{re.sub(r'<[^>]+>', '', pool.group(1)).strip()}"] = cells
    return rows


# -- the fleet table ---------------------------------------------------------------------------


def test_fleet_table_has_breaker_timeouts_errors_and_leaks_per_process(
    viewer: Client, settings: Any
) -> None:
    """A pool timeout and a leak in this process show in its fleet row, with its breaker."""
    configure(
        settings,
        {"other": {"DATABASE": "other", "POOL_SIZE": 1, "MAX_OVERFLOW": 0, "POOL_TIMEOUT": 0.1}},
        LEAK_THRESHOLD=0.05,
        FLEET={"CACHE": "default", "INTERVAL": 0.1},
    )
    engine = get_engine("other")
    held = engine.connect()
    try:
        # A checkout that times out: the pool's one connection is held above.
        with pytest.raises(DatabaseConnectionError), session_scope("other") as session:
            session.execute(text("SELECT 1"))
        time.sleep(0.1)  # past the leak threshold
        assert start_monitoring(role="web") is True  # its first sample finds the leak ...

        def published_leaks() -> int:
            mine = [p for p in get_fleet_metrics() if p["pid"] == os.getpid()]
            return int(mine[0]["pools"]["other"]["leaks"]) if mine else 0

        assert wait_until(lambda: published_leaks() == 1)  # ... and the next one publishes it
        page = viewer.get(BASE).content.decode()
    finally:
        held.close()
    me = f"{HOST}:{os.getpid()}"
    rows = fleet_rows(page)
    # utilization, waiting, breaker, timeouts, connect errors, leaks
    assert rows[f"{me}/other"][1:] == ["0", "closed", "1", "0", "1"]
    assert rows[f"{me}/other"][0].startswith("100 % (1/1)")
    assert rows[f"{me}/main"][2:] == ["closed", "0", "0", "0"]
    assert f'<a href="{process_page(os.getpid())}">{me}</a>' in page
    for header in ("Process", "Role", "Breaker", "Timeouts", "Connect errors", "Leaks"):
        assert re.search(f'<th scope="col"[^>]*>{header}</th>', page), header


@pytest.fixture
def down_pool(settings: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    """The pool "down" on PostgreSQL at a port nothing listens on (connections are refused)."""
    pytest.importorskip("psycopg")
    database = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "mingus_down",
        "USER": "postgres",
        "HOST": "127.0.0.1",
        "PORT": "9",
        "OPTIONS": {"connect_timeout": 2},
        "ATOMIC_REQUESTS": False,  # see test_admin.secret_pool
    }
    add_alias(monkeypatch, "down", database)
    configure(
        settings,
        {"down": {"DATABASE": "down", "POOL_SIZE": 1, "MAX_OVERFLOW": 0}},
        FLEET={"CACHE": "default", "INTERVAL": 0.1},
    )
    return "down"


def test_an_unreachable_pool_is_not_shown_at_0_percent(viewer: Client, down_pool: str) -> None:
    """During an outage the pool's row says unreachable, breaker open, with its connect errors."""
    breaker = get_circuit_breaker(down_pool)
    for _ in range(breaker.failure_threshold):
        with pytest.raises(DatabaseConnectionError), session_scope(down_pool) as session:
            session.execute(text("SELECT 1"))
    assert breaker.state == "open"
    assert start_monitoring(role="web") is True
    page = viewer.get(BASE).content.decode()
    row = fleet_rows(page)[f"{HOST}:{os.getpid()}/{down_pool}"]
    assert row[0] == "unreachable (breaker open)"
    assert row[2] == "open"
    assert int(row[4]) >= breaker.failure_threshold  # connect errors
    assert "%" not in row[0]
    connections_now = re.search(r'<table id="pool-connections".*?</table>', page, re.S)
    assert connections_now is not None
    assert "unreachable</span> (breaker open)" in connections_now.group(0)
    process = viewer.get(process_page(os.getpid())).content.decode()
    assert "unreachable</span> (breaker open)" in process


# -- the fleet cache down ----------------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def dead_fleet_cache(settings: Any) -> str:
    """FLEET on a Redis cache at a port where nothing listens."""
    pytest.importorskip("redis")
    settings.CACHES = {
        **django_settings.CACHES,
        "dead": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{closed_port()}/0",
        },
    }
    configure(settings, FLEET={"CACHE": "dead", "INTERVAL": 60})
    return "dead"


def test_an_unreachable_fleet_cache_is_said_not_taken_for_an_empty_fleet(
    viewer: Client, dead_fleet_cache: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Dashboard and pool page say the cache cannot be reached; a process page answers 503."""
    for url in (BASE, f"{BASE}pool/main/"):
        response = viewer.get(url)
        assert response.status_code == 200
        page = response.content.decode()
        assert 'id="fleet-error"' in page
        assert "cannot be reached (ConnectionError)" in page
        assert f'"{dead_fleet_cache}"' in page
        assert "No process has published yet" not in page
        assert 'id="fleet-table"' not in page
        assert 'id="pool-connections"' in page  # this process's own pools are still shown
    response = viewer.get(process_page(os.getpid()))
    assert response.status_code == 503
    assert 'id="process-unknown"' in response.content.decode()
    assert any("could not read the fleet cache" in r.getMessage() for r in caplog.records)


# -- a page per process ------------------------------------------------------------------------


def test_this_process_page(viewer: Client, settings: Any) -> None:
    """This process's page: host, pid, role, last update, sessions, its pools and charts."""
    configure(settings, FLEET={"CACHE": "default", "INTERVAL": 0.1})
    with session_scope("main") as session:
        session.execute(text("SELECT 1"))
    response = viewer.get(process_page(os.getpid()))
    assert response.status_code == 200
    page = response.content.decode()
    assert f"Process {HOST}:{os.getpid()}" in page
    assert f"<td>{HOST}</td>" in page
    assert "(this process, which served this page)" in page
    assert "<td>web</td>" in page
    assert 'id="session-stats"' in page
    assert 'id="pool-counters"' in page
    assert page.count('class="mingus-chart"') == 2
    assert [row.metrics["name"] for row in response.context["pool_rows"]] == ["main", "other"]
    assert response.context["pool_rows"][0].metrics["checkouts"] == 1


def test_a_process_that_is_not_live_is_404_with_a_message(viewer: Client) -> None:
    """A pid that is not in the fleet answers 404 with a page that says so."""
    response = viewer.get(process_page(1))
    assert response.status_code == 404
    page = response.content.decode()
    assert f"Process {HOST}:1 is not live" in page
    assert f'href="{BASE}"' in page


def test_process_page_needs_the_view_permission(settings: Any) -> None:
    """Anonymous users go to the login page; staff without the permission get 403."""
    url = process_page(os.getpid())
    response = Client().get(url)
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")
    staff = User.objects.create_user("plain-staff", is_staff=True)
    client = Client()
    client.force_login(staff)
    assert client.get(url).status_code == 403
    assert client.get(url + "?live=1").status_code == 403


def child_age(pid: int) -> float:
    """Seconds since process ``pid`` last published (0 while it is not in the fleet)."""
    found = [p for p in get_fleet_metrics() if p["pid"] == pid]
    return time.time() - float(found[0]["updated_at"]) if found else 0.0


CHILD = r"""
import copy, json, os, time
spec = json.loads(os.environ["MINGUS_ADMIN_CHILD"])
from django.conf import settings
settings.CACHES = spec["caches"]
config = copy.deepcopy(settings.MINGUS_SESSIONS)
config["FLEET"] = spec["fleet"]
settings.MINGUS_SESSIONS = config
for alias, overrides in spec["databases"].items():
    settings.DATABASES[alias].update(overrides)
import django
django.setup()
from sqlalchemy import text
from mingus_sessions import session_scope
from mingus_sessions.metrics import start_monitoring
for _ in range(4):
    with session_scope("other") as session:
        session.execute(text("SELECT 1"))
assert start_monitoring(role="worker")
print("ready", os.getpid(), flush=True)
time.sleep(60)
"""


@pytest.fixture
def redis_fleet(settings: Any) -> Iterator[dict[str, Any]]:
    """FLEET on the local Redis, under a key prefix of this test's own."""
    pytest.importorskip("redis")
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=1).close()
    except OSError:
        if os.environ.get("CI"):
            pytest.fail("Redis at 127.0.0.1:6379 is not reachable (required in CI)")
        pytest.skip("Redis at 127.0.0.1:6379 is not reachable")
    cache = {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": "redis://127.0.0.1:6379/8",
        "KEY_PREFIX": f"mingus-admin-test-{uuid.uuid4().hex}",
    }
    settings.CACHES = {**django_settings.CACHES, "fleet": cache}
    fleet = {"CACHE": "fleet", "INTERVAL": INTERVAL}
    configure(settings, FLEET=fleet)
    yield {"caches": {**django_settings.CACHES, "fleet": cache}, "fleet": fleet}
    stop_monitoring()
    caches["fleet"].clear()
    caches["fleet"].close()


@pytest.mark.django_db(transaction=True, databases=["default", "other"])
def test_another_process_has_its_page_until_it_stops(
    viewer: Client, redis_fleet: dict[str, Any]
) -> None:
    """A worker child publishing to Redis is listed and linked; its page shows its pools and
    sessions; stopped, it is marked late; killed, its page (and its live part) says it is
    not live: 404."""
    databases: dict[str, dict[str, Any]] = {}
    if BACKEND != "sqlite":  # the child uses this run's test databases
        databases = {
            alias: {"NAME": connections[alias].settings_dict["NAME"]}
            for alias in ("default", "other")
        }
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]),
        "MINGUS_ADMIN_CHILD": json.dumps({**redis_fleet, "databases": databases}),
    }
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().split() == ["ready", str(child.pid)]
        assert wait_until(lambda: child.pid in {p["pid"] for p in get_fleet_metrics()})
        dashboard = viewer.get(BASE).content.decode()
        rows = fleet_rows(dashboard)
        assert rows[f"{HOST}:{child.pid}/other"][2] == "closed"
        assert f'href="{process_page(child.pid)}"' in dashboard
        assert f"{HOST}:{os.getpid()}/main" in rows  # this process too

        response = viewer.get(process_page(child.pid))
        assert response.status_code == 200
        page = response.content.decode()
        assert "<td>worker</td>" in page
        assert "(this process" not in page
        assert 'class="mingus-chart"' not in page  # its series stay in that process
        other = next(r for r in response.context["pool_rows"] if r.metrics["name"] == "other")
        assert other.metrics["checkouts"] == 4
        assert response.context["process"].sessions["total_sessions"] == 4

        os.kill(child.pid, signal.SIGSTOP)  # it publishes no more, as a hung process would
        assert wait_until(lambda: child_age(child.pid) > 2 * INTERVAL)
        late = viewer.get(BASE).content.decode()
        child_rows = re.search(rf'data-process="{HOST}:{child.pid}">(.*?)</tbody>', late, re.S)
        assert child_rows is not None  # listed until three intervals have passed ...
        assert 'class="mingus-late">late</span>' in child_rows.group(1)  # ... marked late
        assert "mingus-late" not in fleet_rows(late)[f"{HOST}:{os.getpid()}/main"]

        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(10) == -signal.SIGKILL
        assert wait_until(lambda: child.pid not in {p["pid"] for p in get_fleet_metrics()})
        gone = viewer.get(process_page(child.pid))
        assert gone.status_code == 404
        assert f"Process {HOST}:{child.pid} is not live" in gone.content.decode()
        live = viewer.get(process_page(child.pid) + "?live=1")
        assert live.status_code == 404
        assert 'id="process-gone"' in live.content.decode()
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
            child.wait(10)
        assert child.stdout is not None
        assert child.stderr is not None
        child.stdout.close()
        child.stderr.close()


# -- the live parts (what the refresh fetches) -------------------------------------------------


def test_live_parts_come_without_the_admin_chrome_and_keep_messages(settings: Any) -> None:
    """?live=1 answers the page's live parts alone and leaves the messages for the next page."""
    user = User.objects.create_user("fleet-changer", is_staff=True)
    user.user_permissions.add(
        Permission.objects.get(
            content_type__app_label="mingus_sessions", codename="change_connectionpool"
        )
    )
    client = Client()
    client.force_login(user)
    assert client.post(f"{BASE}pool/main/reset/").status_code == 302
    for url in (BASE, f"{BASE}pool/main/", process_page(os.getpid())):
        response = client.get(url + "?live=1")
        assert response.status_code == 200, url
        part = response.content.decode()
        assert part.lstrip().startswith('<div id="mingus-live-fragment">'), url
        assert 'id="header"' not in part
        assert "messagelist" not in part
        assert "data-mingus-live" in part
    page = client.get(BASE).content.decode()
    assert "Reset the metrics of pool &quot;main&quot;." in page  # not taken by the refreshes
    assert f'data-mingus-live-url="{BASE}?live=1"' in page
    assert 'data-mingus-refresh-seconds="5"' in page  # the default 10 s interval, capped at 5
    assert "pools.js" in page
    assert "pools.css" in page
