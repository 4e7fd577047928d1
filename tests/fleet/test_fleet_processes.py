"""A deployment of real processes seen and steered as one fleet.

A gunicorn with three sync workers and a Celery worker (one prefork child) run
the test settings with the fleet on the machine's Redis (a key prefix of this
run's own) and the PostgreSQL test database pytest-django created. Then, from
processes of their own as an operator would run them: ``pool_status``,
``pool_check`` and ``pool_advise`` see every process; ``pool_reset`` and the
admin's reset reach every process within two sample intervals and say which
applied them; a Prometheus scrape, whichever worker answers it, exports every
process, and ``promtool`` finds nothing but the suffix OpenTelemetry's name
implies; health probes leave the counters alone. The figures measured go to
``test-artifacts/fleet-figures.json``.
"""

from __future__ import annotations

import http.cookiejar
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.conf import settings as django_settings
from prometheus_client.parser import text_string_to_metric_families

from mingus_sessions.metrics import get_fleet_metrics, stop_monitoring
from tests.fleet import celery_fleet
from tests.fleet.processes import (
    REPO,
    Started,
    celery_worker,
    free_port,
    get,
    get_json,
    gunicorn,
    wait_for,
)

pytestmark = [
    pytest.mark.postgresql,
    pytest.mark.django_db(transaction=True, databases=["default", "other"]),
]

REDIS = os.environ.get("MINGUS_FLEET_REDIS", "redis://127.0.0.1:6379")
INTERVAL = 0.5
WEB_WORKERS = 3
FIGURES: dict[str, Any] = {}
ARTIFACTS = REPO / "test-artifacts"


@dataclass
class Deployment:
    url: str
    token: str
    env: dict[str, str]
    web: Started
    worker: Started
    web_pids: list[int]
    worker_pid: int
    cache: dict[str, str] = field(default_factory=dict)

    @property
    def pids(self) -> set[int]:
        return {*self.web_pids, self.worker_pid}

    def names(self) -> set[str]:
        return {f"{socket.gethostname()}:{pid}" for pid in self.pids}


def redis_reachable() -> bool:
    host, port = urllib.parse.urlparse(REDIS).hostname, urllib.parse.urlparse(REDIS).port
    try:
        socket.create_connection((host or "127.0.0.1", port or 6379), timeout=2).close()
    except OSError:
        return False
    return True


def fleet_pids() -> dict[int, str]:
    return {int(p["pid"]): p["role"] for p in get_fleet_metrics()}


@pytest.fixture(scope="module")
def deployment(
    django_db_setup: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    """gunicorn (3 workers) and a Celery worker, every one of them in the fleet."""
    if not redis_reachable():
        pytest.fail(f"Redis at {REDIS} is not reachable (the fleet's cache)", pytrace=False)
    run = uuid.uuid4().hex[:10]
    logs = tmp_path_factory.mktemp("fleet")
    cache = {"url": f"{REDIS}/7", "prefix": f"mingus-fleet-test-{run}"}
    token = f"fleet-token-{run}"
    queue = f"mingus-fleet-test-{run}"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.fleet.settings",
        "MINGUS_TEST_DATABASE": "postgresql",
        "MINGUS_TEST_DB_PREFIX": django_settings.DB_PREFIX,
        "MINGUS_TEST_USE_TEST_NAMES": "1",
        "MINGUS_FLEET_REDIS_URL": cache["url"],
        "MINGUS_FLEET_KEY_PREFIX": cache["prefix"],
        "MINGUS_FLEET_INTERVAL": str(INTERVAL),
        "MINGUS_FLEET_TOKEN": token,
        "MINGUS_FLEET_BROKER_URL": f"{REDIS}/6",
        "MINGUS_FLEET_QUEUE": queue,
        "PYTHONPATH": str(REPO),
    }
    port = free_port()
    web = gunicorn(env, WEB_WORKERS, port, logs / "gunicorn.log")
    worker = celery_worker(env, queue, logs / "celery.log")
    producer = celery_fleet.make_app(f"{REDIS}/6", queue)
    url = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    try:
        wait_for(lambda: get(url + "/no-database/")[0] == 200, 60, "gunicorn to answer", web)
        web_pids = wait_for(
            lambda: len(web.children()) == WEB_WORKERS and web.children(), 30, "workers", web
        )
        wait_for(lambda: " ready." in worker.log(), 60, "the Celery worker", worker)
        worker_pid = wait_for(lambda: worker.children() and worker.children()[0], 30, "child")
        found = Deployment(url, token, env, web, worker, web_pids, worker_pid, cache)
        with django_settings_for(found):
            _join_every_process(found, producer)
        FIGURES["start_seconds"] = round(time.monotonic() - started, 1)
        yield found
    finally:
        web.stop()
        worker.stop()
        producer.close()
        _forget_redis_keys(cache["url"], cache["prefix"], f"{REDIS}/6", queue)
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "fleet-figures.json").write_text(json.dumps(FIGURES, indent=2) + "\n")


class django_settings_for:
    """This process reads the deployment's fleet cache (and never publishes to it)."""

    def __init__(self, found: Deployment) -> None:
        from django.test import override_settings

        caches = {
            **django_settings.CACHES,
            "fleet": {
                "BACKEND": "django.core.cache.backends.redis.RedisCache",
                "LOCATION": found.cache["url"],
                "KEY_PREFIX": found.cache["prefix"],
            },
        }
        config = {
            **django_settings.MINGUS_SESSIONS,
            "FLEET": {"CACHE": "fleet", "INTERVAL": INTERVAL},
            "METRICS_TOKEN": found.token,
        }
        self.override = override_settings(CACHES=caches, MINGUS_SESSIONS=config)

    def __enter__(self) -> None:
        stop_monitoring()
        self.override.enable()

    def __exit__(self, *exc: object) -> None:
        stop_monitoring()
        self.override.disable()


def _join_every_process(found: Deployment, producer: Any) -> None:
    """Traffic until each gunicorn worker and the Celery child has published."""
    from concurrent.futures import ThreadPoolExecutor

    def hit(number: int) -> int:
        return get(f"{found.url}/write/fleet-{number}/")[0]

    with ThreadPoolExecutor(8) as pool:
        deadline = time.monotonic() + 60
        number = 0
        while not set(found.web_pids) <= set(fleet_pids()):
            assert time.monotonic() < deadline, f"web workers never all joined: {fleet_pids()}"
            assert all(code == 200 for code in pool.map(hit, range(number, number + 16)))
            number += 16
    for _ in range(3):
        producer.send_task(celery_fleet.TASK)
    wait_for(lambda: found.worker_pid in fleet_pids(), 30, "the worker child", found.worker)
    roles = fleet_pids()
    assert roles[found.worker_pid] == "worker"
    assert all(roles[pid] == "web" for pid in found.web_pids)


def _forget_redis_keys(cache_url: str, prefix: str, broker_url: str, queue: str) -> None:
    import redis

    for url, pattern in ((cache_url, f"{prefix}:*"), (broker_url, f"*{queue}*")):
        client = redis.Redis.from_url(url)
        try:
            for name in list(client.scan_iter(match=pattern)):
                client.delete(name)
        finally:
            client.close()


@pytest.fixture
def fleet(deployment: Deployment) -> Iterator[Deployment]:
    with django_settings_for(deployment):
        yield deployment


def manage(found: Deployment, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``python manage.py *args`` with the deployment's settings: a process of its own."""
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO,
        env={**found.env, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# -- the commands see every process --------------------------------------------------------------


def test_the_commands_see_every_process_of_the_deployment(fleet: Deployment) -> None:
    """pool_status, pool_check and pool_advise, each in a process of its own, list the three
    web workers and the Celery worker."""
    result = manage(fleet, "pool_status", "--json")
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    listed = {(p["pid"], p["role"]) for p in found["processes"]}
    assert listed == {*((pid, "web") for pid in fleet.web_pids), (fleet.worker_pid, "worker")}
    assert found["pools"]["main"]["processes"] == 4
    assert found["pools"]["main"]["checkouts"] == sum(
        p["pools"]["main"]["checkouts"] for p in found["processes"]
    )
    text = manage(fleet, "pool_status").stdout
    assert "4 live process(es)" in text.splitlines()[0]
    check = manage(fleet, "pool_check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "fleet: 4 live process(es)" in check.stdout
    advise = manage(fleet, "pool_advise")
    assert advise.returncode == 0, advise.stderr
    assert advise.stdout.startswith("From 4 live process(es) of the fleet.")
    FIGURES["processes_seen"] = sorted(
        f"{role} {pid}" for pid, role in ((p["pid"], p["role"]) for p in found["processes"])
    )


def test_the_commands_say_in_one_line_when_the_fleet_cache_is_down(fleet: Deployment) -> None:
    """With the fleet on a Redis nobody listens for: exit 2, one line, no traceback."""
    down = f"redis://127.0.0.1:{free_port()}/0"
    result = manage(fleet, "pool_status", MINGUS_FLEET_REDIS_URL=down)
    assert result.returncode == 2
    assert result.stdout == ""
    said = [line for line in result.stderr.splitlines() if "FLEET" in line]
    assert said == [
        'CommandError: The FLEET cache "fleet" (RedisCache) cannot be reached (ConnectionError): '
        "the processes of the deployment cannot be shown; --local shows this process"
    ]
    assert "Traceback" not in result.stderr


# -- actions reach every process -----------------------------------------------------------------


def reach_seconds(action_id: str) -> dict[str, float]:
    """Per process, seconds from the action's issue to its applying it (from the snapshots)."""
    from mingus_sessions import fleet as fleet_cache

    [action] = [
        a for a in fleet_cache.listed_actions(fleet_cache.fleet_cache()) if a["id"] == action_id
    ]
    return {
        f"{p['host']}:{p['pid']}": round(p["actions"][action_id] - action["issued_at"], 3)
        for p in get_fleet_metrics()
        if action_id in (p.get("actions") or {})
    }


def test_pool_reset_reaches_every_process_within_two_intervals(fleet: Deployment) -> None:
    """`pool_reset --all` from a process of its own: every live process applies it at its next
    sample, the command lists them all, and their counters restart."""
    for number in range(12):
        assert get(f"{fleet.url}/write/reset-{number}/")[0] == 200
    started = time.monotonic()
    result = manage(fleet, "pool_reset", "--all", "--json")
    took = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    found = json.loads(result.stdout)
    assert set(found["processes"]["applied"]) == fleet.names()
    assert found["processes"]["pending"] == found["processes"]["gone"] == []
    assert found["waited"] <= 2 * INTERVAL + 0.5
    reached = reach_seconds(found["action"])
    assert set(reached) == fleet.names()
    assert max(reached.values()) <= 2 * INTERVAL
    time.sleep(INTERVAL * 1.5)  # a sample after the reset
    for process in get_fleet_metrics():
        assert process["sessions"]["total_sessions"] == 0, process["pid"]
        assert process["pools"]["main"]["checkouts"] == 0, process["pid"]
    FIGURES["pool_reset"] = {
        "command_seconds_with_interpreter_start": round(took, 2),
        "waited_seconds": found["waited"],
        "reach_seconds_per_process": reached,
    }


def test_the_admins_reset_reaches_the_other_processes(fleet: Deployment) -> None:
    """The admin's "reset all", posted to whichever worker answers: applied there at once,
    by the three others at their next sample; the dashboard's JSON lists all four."""
    from django.contrib.auth.models import User

    User.objects.create_superuser("fleet-admin", password="fleet-pw")
    jar = http.cookiejar.CookieJar()
    browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))

    def csrf(path: str) -> str:
        with browser.open(fleet.url + path, timeout=10) as response:
            page = response.read().decode()
        return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]

    def post(path: str, fields: dict[str, str]) -> str:
        data = urllib.parse.urlencode(fields).encode()
        with browser.open(fleet.url + path, data=data, timeout=10) as response:
            return str(response.read().decode())

    login = csrf("/admin/login/")
    post(
        "/admin/login/",
        {
            "username": "fleet-admin",
            "password": "fleet-pw",
            "csrfmiddlewaretoken": login,
            "next": "/admin/",
        },
    )
    base = "/admin/mingus_sessions/connectionpool/"
    page = post(base + "reset-all/", {"csrfmiddlewaretoken": csrf(base)}).replace("&quot;", '"')
    said = re.search(r"Reset the metrics of every pool [^<]*", page)
    assert said is not None, page[-3000:]
    assert "3 other live process(es) apply it at their next sample" in said.group(0)

    def applied_everywhere() -> Any:
        actions = get_json(fleet.url + "/dashboard/database", token=fleet.token)["actions"]
        latest = actions[0]
        return latest if not latest["pending"] and len(latest["applied"]) == 4 else None

    action = wait_for(applied_everywhere, 4 * INTERVAL, "the admin's reset everywhere")
    assert set(action["applied"]) == fleet.names()
    reached = reach_seconds(action["id"])
    assert max(reached.values()) <= 2 * INTERVAL
    FIGURES["admin_reset"] = {"message": said.group(0).strip(), "reach_seconds": reached}


# -- Prometheus ----------------------------------------------------------------------------------


def test_every_scrape_exports_every_process_whichever_worker_answers(fleet: Deployment) -> None:
    """Twelve scrapes (gunicorn spreads them over its workers): each has the four processes,
    parses, and adds up; promtool reports only the _count suffix of db_client_connection_count."""
    for number in range(8):
        assert get(f"{fleet.url}/write/scrape-{number}/")[0] == 200
    time.sleep(INTERVAL * 1.5)  # every process has published what it did
    scrapes = []
    for _ in range(12):
        status, body = get(fleet.url + "/metrics/database/prometheus", token=fleet.token)
        assert status == 200
        scrapes.append(body.decode())
    expected = {(socket.gethostname(), str(pid)) for pid in fleet.pids}
    for scrape in scrapes:
        families = {f.name: f for f in text_string_to_metric_families(scrape)}
        info = families["mingus_sessions_process_info"].samples
        assert {(s.labels["host"], s.labels["pid"]) for s in info} == expected
        for family in families.values():
            for sample in family.samples:
                assert {"host", "pid"} <= set(sample.labels), sample
    last = {f.name: f for f in text_string_to_metric_families(scrapes[-1])}
    wait = {
        s.labels["pid"]: s.value
        for s in last["db_client_connection_wait_time_seconds"].samples
        if s.name.endswith("_count") and s.labels["pool"] == "main"
    }
    checkouts = {
        s.labels["pid"]: s.value
        for s in last["mingus_sessions_pool_checkouts"].samples
        if s.labels["pool"] == "main"
    }
    assert wait == checkouts  # one acquire wait per checkout, per process, so they add up
    tool = shutil.which("promtool")
    assert tool is not None, "promtool is not installed (Debian's prometheus package)"
    lint = subprocess.run(
        [tool, "check", "metrics"], input=scrapes[-1], capture_output=True, text=True, check=False
    )
    assert (lint.stdout + lint.stderr).strip().splitlines() == [
        'db_client_connection_count non-histogram and non-summary metrics should not have "_count" '
        "suffix"
    ]
    lines = [line for line in scrapes[-1].splitlines() if line and not line.startswith("#")]
    FIGURES["scrape"] = {
        "scrapes": len(scrapes),
        "processes_in_each": len(expected),
        "series": len(lines),
        "bytes": len(scrapes[-1]),
        "families": len(last),
        "main_checkouts_per_pid": checkouts,
        "sample_lines": [line for line in lines if 'pool="main"' in line][:6],
    }


# -- health --------------------------------------------------------------------------------------


def test_health_probes_leave_the_counters_alone(fleet: Deployment) -> None:
    """Thirty probes spread over the workers: 200 each, and no process's checkouts move."""
    time.sleep(INTERVAL * 1.5)
    before = {p["pid"]: p["pools"] for p in get_fleet_metrics()}
    for _ in range(30):
        status, body = get(fleet.url + "/health/database")
        assert status == 200
        assert json.loads(body)["status"] == "healthy"
    time.sleep(INTERVAL * 2.5)  # every process has published since
    after = {p["pid"]: p["pools"] for p in get_fleet_metrics()}
    assert set(after) == set(before)
    for pid, pools in after.items():
        for name in ("main", "other"):
            assert pools[name]["checkouts"] == before[pid][name]["checkouts"], (pid, name)
    FIGURES["health_probes"] = {"probes": 30, "checkouts_moved": 0}
