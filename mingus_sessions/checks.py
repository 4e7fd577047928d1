"""System checks: every invalid setting, with a stable id and a hint; and a fleet cache that
processes cannot share (the fleet view, the fleet's actions, a shared circuit breaker).

The checks carry no ``database`` tag: they inspect settings and the environment
only, so they run the same way under ``manage.py check``, ``runserver``,
``migrate`` and the test runner on Django 5.2 and 6.x alike (database-tagged
checks only run when a command asks for them). The ids are listed in
``docs/checks.md``.
"""

from __future__ import annotations

from typing import Any

from django.core import checks

from . import conf

#: Cache backends whose entries no other process reads: (check id, what happens).
_UNSHARED = {
    "django.core.cache.backends.locmem.LocMemCache": (
        "mingus_sessions.W001",
        "a local-memory cache, which each process keeps for itself",
    ),
    "django.core.cache.backends.dummy.DummyCache": (
        "mingus_sessions.W002",
        "a dummy cache, which stores nothing",
    ),
}


@checks.register("mingus_sessions")
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Report each problem with ``MINGUS_SESSIONS`` and its environment variables."""
    return [
        checks.Error(problem.msg, hint=problem.hint, id=problem.id) for problem in conf.problems()
    ]


@checks.register("mingus_sessions")
def check_fleet_cache(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Warn when ``FLEET["CACHE"]`` is a cache the processes of the deployment cannot share.

    Every deployment has several processes as far as the fleet is concerned: its
    servers' workers, its Celery workers, and each ``manage.py`` command (``pool_status``,
    ``pool_reset``), which shows and acts on the others only through this cache. A
    project that really is one process silences W001 with ``SILENCED_SYSTEM_CHECKS``.
    """
    from django.conf import settings

    if conf.problems():
        return []  # the settings' errors come first; the cache alias may be one of them
    config = conf.get_config()
    shared_breaker = config.circuit_breaker.enabled and config.circuit_breaker.shared
    if not config.monitoring and not shared_breaker:
        return []  # nothing is published or shared: the fleet is not in use
    backend = str(settings.CACHES.get(config.fleet.cache, {}).get("BACKEND", ""))
    if backend not in _UNSHARED:
        return []
    check_id, what = _UNSHARED[backend]
    key = 'MINGUS_SESSIONS["FLEET"]["CACHE"]'
    return [
        checks.Warning(
            f'{key} is "{config.fleet.cache}", {what} ({backend.rsplit(".", 1)[-1]}): the '
            "processes of the deployment cannot see each other, so pool_status, pool_check, "
            "pool_advise, the admin and the metrics endpoints show one process at most, and "
            "pool_reset and the admin's actions reach no other process."
            + (
                ' With CIRCUIT_BREAKER["SHARED"], no process learns of another\'s open '
                "breaker either: each keeps its own."
                if shared_breaker
                else ""
            ),
            hint=f"Set {key} to a cache every process shares: Redis, Memcached, the database "
            "cache, or a file-based cache on a single host."
            + (
                f' A project that runs as one process only may add "{check_id}" to '
                "SILENCED_SYSTEM_CHECKS."
                if check_id == "mingus_sessions.W001"
                else ""
            ),
            id=check_id,
        )
    ]
