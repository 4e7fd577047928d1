"""The fleet cache's system checks: W001 for a local-memory cache, W002 for a dummy one."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import pytest
from django.core import checks
from django.core.management import call_command

from mingus_sessions.checks import check_fleet_cache

if TYPE_CHECKING:
    from pytest_django.fixtures import Settings

KEY = 'MINGUS_SESSIONS["FLEET"]["CACHE"]'
CONSEQUENCE = (
    "the processes of the deployment cannot see each other, so pool_status, pool_check, "
    "pool_advise, the admin and the metrics endpoints show one process at most, and pool_reset "
    "and the admin's actions reach no other process."
)
SHARED = (
    f"Set {KEY} to a cache every process shares: Redis, Memcached, the database cache, or a "
    "file-based cache on a single host."
)


def fleet_on(settings: Settings, backend: str, **extra: object) -> None:
    settings.CACHES = {"default": {"BACKEND": backend, **extra}}


def test_a_local_memory_fleet_cache_is_w001(settings: Settings) -> None:
    """LocMemCache: W001, with the exact message and hint (silencing it is for one process)."""
    fleet_on(settings, "django.core.cache.backends.locmem.LocMemCache")
    assert check_fleet_cache() == [
        checks.Warning(
            f'{KEY} is "default", a local-memory cache, which each process keeps for itself '
            f"(LocMemCache): {CONSEQUENCE}",
            hint=f"{SHARED} A project that runs as one process only may add "
            '"mingus_sessions.W001" to SILENCED_SYSTEM_CHECKS.',
            id="mingus_sessions.W001",
        )
    ]


def test_a_dummy_fleet_cache_is_w002(settings: Settings) -> None:
    """DummyCache stores nothing, not even for one process: W002, and no silencing advice."""
    fleet_on(settings, "django.core.cache.backends.dummy.DummyCache")
    assert check_fleet_cache() == [
        checks.Warning(
            f'{KEY} is "default", a dummy cache, which stores nothing (DummyCache): {CONSEQUENCE}',
            hint=SHARED,
            id="mingus_sessions.W002",
        )
    ]


@pytest.mark.parametrize(
    ("backend", "extra"),
    [
        ("django.core.cache.backends.redis.RedisCache", {"LOCATION": "redis://127.0.0.1:6379/9"}),
        ("django.core.cache.backends.db.DatabaseCache", {"LOCATION": "fleet_cache"}),
        ("django.core.cache.backends.filebased.FileBasedCache", {"LOCATION": "/tmp/fleet"}),
        (
            "django.core.cache.backends.memcached.PyMemcacheCache",
            {"LOCATION": "127.0.0.1:11211"},
        ),
    ],
)
def test_shared_fleet_caches_pass(settings: Settings, backend: str, extra: dict[str, str]) -> None:
    """Caches that every process reads raise nothing."""
    fleet_on(settings, backend, **extra)
    assert check_fleet_cache() == []


def test_no_warning_when_monitoring_is_off(settings: Settings) -> None:
    """MONITORING off: nothing is published, so the fleet cache does not matter."""
    fleet_on(settings, "django.core.cache.backends.locmem.LocMemCache")
    settings.MINGUS_SESSIONS = {**settings.MINGUS_SESSIONS, "MONITORING": False}
    assert check_fleet_cache() == []


def test_the_fleet_cache_alias_is_the_one_checked(settings: Settings) -> None:
    """FLEET["CACHE"] names another alias: that one's backend decides."""
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "fleet": {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "t"},
    }
    settings.MINGUS_SESSIONS = {**settings.MINGUS_SESSIONS, "FLEET": {"CACHE": "fleet"}}
    assert check_fleet_cache() == []


def test_manage_py_check_shows_w001_and_silencing_hides_it(settings: Settings) -> None:
    """`manage.py check` warns (it does not fail), and SILENCED_SYSTEM_CHECKS hides it."""
    fleet_on(settings, "django.core.cache.backends.locmem.LocMemCache")
    err = io.StringIO()
    call_command("check", stdout=io.StringIO(), stderr=err)
    assert "(mingus_sessions.W001)" in err.getvalue()
    settings.SILENCED_SYSTEM_CHECKS = ["mingus_sessions.W001"]
    err = io.StringIO()
    out = io.StringIO()
    call_command("check", stdout=out, stderr=err)
    # Only ours: other apps' checks (the debug toolbar's W001) may speak too.
    assert "mingus_sessions.W001" not in err.getvalue() + out.getvalue()


@pytest.mark.parametrize("monitoring", [True, False])
def test_a_shared_breaker_on_a_local_memory_cache_is_w001(
    settings: Settings, monitoring: bool
) -> None:
    """CIRCUIT_BREAKER["SHARED"] needs the fleet cache even with monitoring off: W001 says so."""
    fleet_on(settings, "django.core.cache.backends.locmem.LocMemCache")
    settings.MINGUS_SESSIONS = {
        **settings.MINGUS_SESSIONS,
        "MONITORING": monitoring,
        "CIRCUIT_BREAKER": {"SHARED": True},
    }
    [warning] = check_fleet_cache()
    assert warning.id == "mingus_sessions.W001"
    assert warning.msg.endswith(
        'reach no other process. With CIRCUIT_BREAKER["SHARED"], no process learns of '
        "another's open breaker either: each keeps its own."
    )


def test_a_shared_breaker_on_a_shared_cache_passes(settings: Settings) -> None:
    fleet_on(
        settings,
        "django.core.cache.backends.redis.RedisCache",
        LOCATION="redis://127.0.0.1:6379/9",
    )
    settings.MINGUS_SESSIONS = {
        **settings.MINGUS_SESSIONS,
        "MONITORING": False,
        "CIRCUIT_BREAKER": {"SHARED": True},
    }
    assert check_fleet_cache() == []
