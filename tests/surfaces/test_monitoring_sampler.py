"""The sampler's time series and the fleet view, in one process, in two sharing Redis, and
under concurrent publishers.

Every test that starts the sampler stops it in teardown (the ``no_sampler``
fixture), and the two-process fleet test terminates its child by pid.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.core.cache import caches
from django.db import connections
from django.test import Client
from sqlalchemy import text

from mingus_sessions import fleet, monitor, session_scope
from mingus_sessions._core.recorder import PoolRecorder
from mingus_sessions._core.state import state
from mingus_sessions.engines import get_entry
from mingus_sessions.metrics import (
    get_fleet_metrics,
    get_pool_metrics,
    start_monitoring,
    stop_monitoring,
)
from tests.surfaces.helpers import (
    BACKEND,
    SESSION_KEYS,
    configure,
    db,
    records,
    select_one,
    wait_until,
)

#: No sampler before the test, none after it (tests/surfaces/conftest.py).
pytestmark = pytest.mark.usefixtures("no_sampler")

ROOT = Path(__file__).resolve().parents[2]


def this_process(fleet: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [p for p in fleet if p["pid"] == os.getpid() and p["host"] == socket.gethostname()]


# -- the sampler and its time series -----------------------------------------------------------


@db
def test_start_monitoring_once(settings: Any) -> None:
    """start_monitoring() is True when it starts the sampler, False while it runs."""
    configure(settings, FLEET={"CACHE": "default", "INTERVAL": 0.1})
    assert monitor.is_monitoring() is False
    assert start_monitoring() is True
    assert monitor.is_monitoring() is True
    assert start_monitoring() is False
    assert start_monitoring(role="worker") is False
    thread = state.sampler.thread  # type: ignore[union-attr]
    assert thread.daemon
    assert thread.is_alive()
    stop_monitoring()
    assert monitor.is_monitoring() is False
    assert not thread.is_alive()
    stop_monitoring()  # idempotent
    assert start_monitoring() is True  # and it can start again
    stop_monitoring()


@db
def test_time_series_grows_per_tick_and_stays_bounded(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One point per pool per tick, at most SERIES_POINTS of them, oldest first."""
    configure(settings, FLEET={"CACHE": "default", "INTERVAL": 0.1})
    monkeypatch.setattr(monitor, "SERIES_POINTS", 4)
    assert monitor.get_time_series() == {}
    select_one()
    assert start_monitoring()
    first = monitor.get_time_series()
    assert set(first) == {"main", "other"}
    assert len(first["main"]) >= 1  # the first sample is taken at once
    point = first["main"][0]
    assert set(point) == {"t", "utilization", "checked_out", "waiting", "acquire_p99_ms"}
    assert point["checked_out"] == 0
    assert point["acquire_p99_ms"] > 0  # this interval's wait: the checkout above

    assert wait_until(lambda: len(monitor.get_time_series("main")["main"]) == 3, timeout=3)
    assert wait_until(lambda: len(monitor.get_time_series("main")["main"]) == 4, timeout=3)
    oldest = monitor.get_time_series("main")["main"][0]["t"]
    assert wait_until(lambda: monitor.get_time_series("main")["main"][0]["t"] > oldest, 3)
    series = monitor.get_time_series("main")
    assert set(series) == {"main"}
    points = series["main"]
    assert len(points) == 4
    times = [p["t"] for p in points]
    assert times == sorted(times)
    assert all(0.05 <= later - earlier < 1.0 for earlier, later in itertools.pairwise(times))
    assert points[-1]["acquire_p99_ms"] == 0  # no checkout in later intervals

    with session_scope() as session:
        session.execute(text("SELECT 1"))
        assert wait_until(
            lambda: monitor.get_time_series("main")["main"][-1]["checked_out"] == 1, timeout=3
        )
        assert monitor.get_time_series("main")["main"][-1]["utilization"] == 0.1
    stop_monitoring()
    assert monitor.get_time_series() == {}


@db
def test_interval_p99_after_a_reset_is_of_what_came_after_it(settings: Any) -> None:
    """A reset zeroes the histogram: the next point is of the new counts, never of differences."""
    from mingus_sessions.metrics import reset_metrics

    configure(settings, FLEET={"CACHE": "default", "INTERVAL": 60})
    recorder = get_entry("main").probe
    assert isinstance(recorder, PoolRecorder)
    assert recorder.acquire is not None
    sampler = monitor._Monitor("test", 60)
    for _ in range(900):
        recorder.acquire.record(5)  # µs
    sampler.tick()
    reset_metrics("main")
    for _ in range(1000):
        recorder.acquire.record(10)
    for _ in range(3):
        recorder.acquire.record(100_000)
    sampler.tick()
    # 3 slow waits of 1,003 are under 1%: the p99 is the 10 µs bucket, not 100 ms.
    assert 0 < sampler.series["main"][-1]["acquire_p99_ms"] < 0.02
    reset_metrics("main")
    select_one()
    sampler.tick()
    assert sampler.series["main"][-1]["acquire_p99_ms"] > 0  # the one checkout since


@db
def test_the_sampler_starts_even_if_the_fleet_cache_is_down(
    settings: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Leak reports and the time series do not depend on the fleet's cache answering."""
    configure(settings, FLEET={"CACHE": "default", "INTERVAL": 0.1})

    def cache_down(self: Any, pools: Any, now: float) -> None:
        raise ConnectionError("the fleet's cache does not answer")

    monkeypatch.setattr(monitor._Monitor, "publish", cache_down)
    assert start_monitoring()
    assert monitor.is_monitoring()
    assert len(monitor.get_time_series("main")["main"]) == 1
    assert wait_until(lambda: len(monitor.get_time_series("main")["main"]) >= 2, timeout=3)
    assert "first sample failed" in caplog.text


@db
def test_a_pool_that_cannot_be_read_does_not_stop_the_others_samples(
    settings: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    configure(settings, FLEET={"CACHE": "default", "INTERVAL": 60})
    real = fleet._pool_metrics

    def one_pool_broken(pool: str) -> Any:
        if pool == "other":
            raise ImportError("no driver for the other pool")
        return real(pool)

    monkeypatch.setattr(fleet, "_pool_metrics", one_pool_broken)
    sampler = monitor._Monitor("test", 60)
    sampler.tick()
    assert set(sampler.series) == {"main"}
    assert "could not read pool other" in caplog.text


@db
def test_first_points_are_one_interval_apart(settings: Any) -> None:
    """start_monitoring() samples once at once; the next sample comes one interval later."""
    configure(settings, FLEET={"CACHE": "default", "INTERVAL": 0.2})
    assert start_monitoring()
    time.sleep(0.1)  # half an interval
    assert len(monitor.get_time_series("main")["main"]) == 1
    assert wait_until(lambda: len(monitor.get_time_series("main")["main"]) == 2, timeout=3)
    first, second = (p["t"] for p in monitor.get_time_series("main")["main"])
    assert second - first >= 0.15


# -- the fleet view ----------------------------------------------------------------------------


@db
def test_fleet_lists_this_process_while_it_monitors(settings: Any) -> None:
    """get_fleet_metrics(): host, pid, role, updated_at, pools, sessions; gone after stop."""
    configure(settings, FLEET={"CACHE": "default", "INTERVAL": 0.1})
    select_one()
    assert this_process(get_fleet_metrics()) == []
    assert start_monitoring(role="web")
    mine = this_process(get_fleet_metrics())
    assert len(mine) == 1
    entry = mine[0]
    assert {"host", "pid", "role", "updated_at", "pools", "sessions"} <= set(entry)
    assert entry["role"] == "web"
    assert isinstance(entry["updated_at"], float)
    assert time.time() - entry["updated_at"] < 5
    assert set(entry["pools"]) == {"main", "other"}
    assert entry["pools"]["main"] == {
        **get_pool_metrics("main").as_dict(),
        "since": entry["pools"]["main"]["since"],
    }
    assert entry["pools"]["main"]["checkouts"] == 1
    assert set(entry["sessions"]) == SESSION_KEYS
    assert entry["sessions"]["total_sessions"] == 1
    json.dumps(entry)

    first = entry["updated_at"]
    assert wait_until(lambda: this_process(get_fleet_metrics())[0]["updated_at"] > first, 3)
    select_one()
    assert wait_until(
        lambda: this_process(get_fleet_metrics())[0]["pools"]["main"]["checkouts"] == 2, 3
    )
    stop_monitoring()
    assert this_process(get_fleet_metrics()) == []


@db
def test_fleet_skips_processes_that_stopped_publishing(settings: Any) -> None:
    """An entry older than 3 intervals is not listed, even while the cache still holds it."""
    configure(settings, FLEET={"CACHE": "default", "INTERVAL": 0.1})
    cache = caches["default"]
    now = time.time()
    stale_member, live_member = "ghost-host:999991", "other-host:999992"

    def snapshot(member: str, updated_at: float) -> dict[str, Any]:
        host, pid = member.split(":")
        return {
            "host": host,
            "pid": int(pid),
            "role": "worker",
            "updated_at": updated_at,
            "pools": {},
            "sessions": {},
        }

    try:
        cache.set(fleet.PREFIX + stale_member, snapshot(stale_member, now - 0.35), None)
        cache.set(fleet.PREFIX + live_member, snapshot(live_member, now), None)
        cache.set(fleet.INDEX, {stale_member: now - 0.35, live_member: now}, None)
        assert start_monitoring(role="web")
        listed = {(p["host"], p["pid"]) for p in get_fleet_metrics()}
        assert ("ghost-host", 999991) not in listed
        assert ("other-host", 999992) in listed
        assert (socket.gethostname(), os.getpid()) in listed
        time.sleep(0.35)  # now the other one has not published for 3 intervals either
        listed = {(p["host"], p["pid"]) for p in get_fleet_metrics()}
        assert listed == {(socket.gethostname(), os.getpid())}
    finally:
        stop_monitoring()
        cache.delete_many([fleet.PREFIX + stale_member, fleet.PREFIX + live_member])
        cache.delete(fleet.INDEX)


@db
def test_monitoring_off_starts_nothing(settings: Any) -> None:
    """MONITORING False: start_monitoring() is False, nothing is published, plain probes."""
    configure(settings, MONITORING=False, FLEET={"CACHE": "default", "INTERVAL": 0.1})
    assert start_monitoring() is False
    assert start_monitoring(role="web") is False
    assert monitor.is_monitoring() is False
    assert this_process(get_fleet_metrics()) == []
    select_one()
    assert type(get_entry("main").probe).__name__ == "PoolProbe"
    assert get_pool_metrics("main").checkouts == 0  # nothing recorded: the cost-free path
    response = Client().get("/no-database/")  # the first request starts nothing either
    assert response.status_code == 200
    assert monitor.is_monitoring() is False


@db
def test_first_request_starts_the_sampler_as_web(settings: Any) -> None:
    """In a server process the sampler starts by itself with the first request, role "web"."""
    configure(settings, FLEET={"CACHE": "default", "INTERVAL": 0.1})
    assert monitor.is_monitoring() is False
    response = Client().get("/no-database/")
    assert response.status_code == 200
    assert monitor.is_monitoring() is True
    mine = this_process(get_fleet_metrics())
    assert [p["role"] for p in mine] == ["web"]


@db
def test_a_celery_task_process_starts_the_sampler_as_worker(settings: Any) -> None:
    """Celery's worker_process_init (a prefork child, the solo pool) starts it, role "worker"."""
    from celery.signals import worker_process_init

    import mingus_sessions.celery  # noqa: F401 - connects the receiver, as a task module does

    configure(settings, FLEET={"CACHE": "default", "INTERVAL": 0.1})
    assert monitor.is_monitoring() is False
    worker_process_init.send(sender="celery@test")
    assert monitor.is_monitoring() is True
    mine = this_process(get_fleet_metrics())
    assert [p["role"] for p in mine] == ["worker"]
    worker_process_init.send(sender="celery@test")  # a second one changes nothing
    assert [p["role"] for p in this_process(get_fleet_metrics())] == ["worker"]

    stop_monitoring()
    configure(settings, MONITORING=False, FLEET={"CACHE": "default", "INTERVAL": 0.1})
    worker_process_init.send(sender="celery@test")
    assert monitor.is_monitoring() is False


# -- two real processes sharing Redis ----------------------------------------------------------


CHILD = r"""
import copy, json, os, sys, time
spec = json.loads(os.environ["MINGUS_FLEET_CHILD"])
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
for _ in range(3):
    with session_scope() as session:
        session.execute(text("SELECT 1"))
assert start_monitoring(role="worker")
print("ready", os.getpid(), flush=True)
time.sleep(float(spec["lifetime"]))
"""


def redis_reachable() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=1).close()
    except OSError:
        return False
    return True


@pytest.fixture
def redis_fleet(settings: Any) -> Iterator[dict[str, Any]]:
    """FLEET on a Redis cache whose KEY_PREFIX is unique to this run."""
    if not redis_reachable():
        if os.environ.get("CI"):
            pytest.fail("Redis at 127.0.0.1:6379 is not reachable (required in CI)")
        pytest.skip("Redis at 127.0.0.1:6379 is not reachable")
    fleet_cache = {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": "redis://127.0.0.1:6379/7",
        "KEY_PREFIX": f"mingus-test-{uuid.uuid4().hex}",
    }
    settings.CACHES = {**django_settings.CACHES, "fleet": fleet_cache}
    fleet_setting = {"CACHE": "fleet", "INTERVAL": 0.2}
    configure(settings, FLEET=fleet_setting)
    spec = {"caches": {**django_settings.CACHES, "fleet": fleet_cache}, "fleet": fleet_setting}
    yield spec
    stop_monitoring()
    cache = caches["fleet"]
    index = cache.get(fleet.INDEX) or {}
    cache.delete_many([fleet.PREFIX + member for member in index])
    cache.delete(fleet.INDEX)
    cache.close()


def test_a_snapshot_on_redis_outlives_its_fractional_timeout(redis_fleet: dict[str, Any]) -> None:
    """Redis keeps whole seconds: a 0.4 s interval (stale after 1.2 s) must not expire at 1 s."""
    found = fleet.local_snapshot("web")
    fleet.publish(fleet.fleet_cache(), found, 0.4)
    time.sleep(1.1)
    key = fleet.PREFIX + fleet.member(found["host"], found["pid"])
    assert caches["fleet"].get(key) is not None


@db
@pytest.mark.slow
def test_fleet_of_two_processes_sharing_redis(redis_fleet: dict[str, Any]) -> None:
    """A worker child and this web process both listed; the killed child drops out."""
    databases: dict[str, dict[str, Any]] = {}
    if BACKEND != "sqlite":  # the child uses this run's test database
        databases = {
            alias: {"NAME": connections[alias].settings_dict["NAME"]}
            for alias in ("default", "other")
        }
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "MINGUS_FLEET_CHILD": json.dumps({**redis_fleet, "databases": databases, "lifetime": 60}),
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
        ready = child.stdout.readline()
        assert ready.split() == ["ready", str(child.pid)], child.stderr.read()  # type: ignore[union-attr]
        select_one()
        assert start_monitoring(role="web")

        def roles() -> dict[int, str]:
            return {p["pid"]: p["role"] for p in get_fleet_metrics()}

        assert wait_until(lambda: {os.getpid(), child.pid} <= set(roles()), timeout=5)
        assert roles()[os.getpid()] == "web"
        assert roles()[child.pid] == "worker"
        worker = next(p for p in get_fleet_metrics() if p["pid"] == child.pid)
        assert worker["pools"]["main"]["checkouts"] == 3
        assert worker["sessions"]["total_sessions"] == 3
        assert worker["host"] == socket.gethostname()

        os.kill(child.pid, signal.SIGTERM)
        assert child.wait(10) == -signal.SIGTERM
        killed = time.monotonic()
        assert wait_until(lambda: child.pid not in roles(), timeout=5)
        assert time.monotonic() - killed <= 3 * 0.2 + 1.5
        time.sleep(3 * 0.2 + 0.1)  # more than 3 intervals: still gone, this one still there
        assert child.pid not in roles()
        assert roles().get(os.getpid()) == "web"
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
            child.wait(10)
        child.stdout.close()  # type: ignore[union-attr]
        child.stderr.close()  # type: ignore[union-attr]


# -- the fleet index under concurrent publishers ---------------------------------------------


@pytest.fixture
def race_cache(settings: Any) -> Iterator[Any]:
    """A local-memory FLEET cache of its own (threads share it; other tests' keys stay apart)."""
    settings.CACHES = {
        **django_settings.CACHES,
        "fleet-race": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": f"fleet-race-{uuid.uuid4().hex}",
        },
    }
    configure(settings, FLEET={"CACHE": "fleet-race", "INTERVAL": 60})
    cache = caches["fleet-race"]
    yield cache
    cache.clear()


def publisher(number: int, role: str = "worker") -> monitor._Monitor:
    """A sampler that publishes as process ``number`` of a made-up host (it is never started)."""
    member = monitor._Monitor(role, 60)
    member.host, member.pid = "race-host", 100_000 + number
    return member


def all_at_once(calls: list[Callable[[], None]]) -> None:
    """Run ``calls`` in one thread each, released together; re-raise the first failure."""
    barrier = threading.Barrier(len(calls), timeout=10)
    errors: list[BaseException] = []

    def run(call: Callable[[], None]) -> None:
        try:
            barrier.wait()
            call()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(call,)) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors, errors
    assert not any(thread.is_alive() for thread in threads)


def test_concurrent_publishers_never_drop_each_other(race_cache: Any) -> None:
    """Members joining and leaving at the same moment: the index ends with exactly the joiners.

    Before the index had a lock, each publisher read the index, added itself and wrote it
    back, so one that wrote second erased one that wrote first (and a leaver could write a
    joiner out) until that member's next tick; with a tiny switch interval this loses
    members in nearly every round.
    """
    members = [publisher(n) for n in range(16)]
    joiners, leavers = members[::2], members[1::2]
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # interleave the threads as often as possible
    try:
        for _ in range(25):
            race_cache.delete(fleet.INDEX)
            all_at_once([lambda m=m: m.publish({}, time.time()) for m in members])
            assert set(race_cache.get(fleet.INDEX)) == {m.member for m in members}
            all_at_once(
                [lambda m=m: m.unpublish() for m in leavers]
                # 601 s on, each joiner's stamp is due, so it rewrites the index too
                + [lambda m=m: m.publish({}, time.time() + 601) for m in joiners]
            )
            assert set(race_cache.get(fleet.INDEX)) == {m.member for m in joiners}
    finally:
        sys.setswitchinterval(switch)
    assert race_cache.get(fleet.INDEX_LOCK) is None  # every holder released it
    listed = {(p["host"], p["pid"], p["role"]) for p in get_fleet_metrics()}
    assert listed == {("race-host", m.pid, "worker") for m in joiners}


def test_fleet_index_prunes_silent_members(race_cache: Any) -> None:
    """A member silent for 30 intervals leaves the index when another one writes it."""
    now = time.time()
    race_cache.set(fleet.INDEX, {"gone:1": now - 30 * 60 - 1, "quiet:2": now - 29 * 60}, None)
    publisher(1).publish({}, now)
    assert set(race_cache.get(fleet.INDEX)) == {"quiet:2", "race-host:100001"}


def test_fleet_index_lock_held_elsewhere_is_left_alone(
    race_cache: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A lock that another process holds (or died holding): wait a bounded time, write nothing."""
    monkeypatch.setattr(fleet, "INDEX_LOCK_WAIT", 0.1)
    caplog.set_level(logging.WARNING, logger="mingus_sessions")
    race_cache.set(fleet.INDEX, {"other:1": time.time()}, None)
    assert race_cache.add(fleet.INDEX_LOCK, "another-holder", timeout=60)
    member = publisher(1)
    started = time.monotonic()
    member.publish({}, time.time())  # no exception
    assert time.monotonic() - started < 2
    assert race_cache.get(fleet.INDEX) == {"other:1": pytest.approx(time.time(), abs=5)}
    assert race_cache.get(fleet.INDEX_LOCK) == "another-holder"  # not ours to release
    assert any("stayed locked" in r.getMessage() for r in records(caplog, "mingus_sessions"))
    race_cache.delete(fleet.INDEX_LOCK)  # the lease lapses
    member.publish({}, time.time())  # the next tick joins
    assert set(race_cache.get(fleet.INDEX)) == {"other:1", member.member}


def test_fleet_index_cache_errors_are_logged_not_raised(
    race_cache: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A cache failing while the lock is held: logged, no exception, and the lock released."""
    caplog.set_level(logging.WARNING, logger="mingus_sessions")
    set_key = race_cache.set

    def failing_set(key: str, *args: Any, **kwargs: Any) -> None:
        if key == fleet.INDEX:
            raise ConnectionError("cache went away")
        set_key(key, *args, **kwargs)

    monkeypatch.setattr(race_cache, "set", failing_set)
    member = publisher(1)
    member.publish({}, time.time())
    member.unpublish()
    assert race_cache.get(fleet.INDEX_LOCK) is None
    assert any(
        "Could not update the fleet's mingus_sessions:fleet:index" in r.getMessage()
        for r in records(caplog, "mingus_sessions")
    )

    def failing_add(*args: Any, **kwargs: Any) -> bool:
        raise ConnectionError("cache went away")

    monkeypatch.setattr(race_cache, "add", failing_add)
    member.publish({}, time.time())  # no exception either
