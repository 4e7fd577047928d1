"""The settings schema: ``MINGUS_SESSIONS`` plus the environment, validated.

Plain Python with no Django import: :func:`parse_settings` turns the user's dict,
the environment and the names of the configured databases and caches into a
frozen :class:`Config`, or into a list of :class:`Problem` that the system checks
report and that :class:`~mingus_sessions.errors.ConfigurationError` quotes.
:mod:`mingus_sessions.conf` is the Django side that feeds it.

The modules: ``schema`` (the defaults, the limits and the frozen dataclasses),
``readers`` (the typed readers that collect problems), ``environment`` (the
variables that override settings), ``pool`` and ``pgbouncer`` (the ``POOLS``
section), ``sections`` (every other top-level key).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from types import MappingProxyType
from typing import Any

from .environment import ENV_MONITORING, env_name
from .pool import _parse_pools
from .readers import _Collector
from .schema import (
    BUILTIN_POOL_CLASSES,
    DEFAULTS,
    ISOLATION_LEVELS,
    MAX_SECONDS,
    MIN_SOCKET_TIMEOUT,
    PGBOUNCER_MODES,
    POOL_DEFAULTS,
    SETTING,
    SUPPORTED_ENGINES,
    SUPPORTED_SUMMARY,
    BreakerConfig,
    Config,
    FleetConfig,
    OtelConfig,
    PoolConfig,
    Problem,
    RetryConfig,
    key_path,
)
from .sections import (
    _breaker,
    _celery_pool,
    _check_setting,
    _commit_hook,
    _default_pool,
    _flag,
    _fleet_cache,
    _fleet_interval,
    _merge_section,
    _metrics_token,
    _monitoring,
    _opentelemetry,
    _retry,
    _threshold,
)

__all__ = [
    "BUILTIN_POOL_CLASSES",
    "DEFAULTS",
    "ENV_MONITORING",
    "ISOLATION_LEVELS",
    "MAX_SECONDS",
    "MIN_SOCKET_TIMEOUT",
    "PGBOUNCER_MODES",
    "POOL_DEFAULTS",
    "SETTING",
    "SUPPORTED_ENGINES",
    "SUPPORTED_SUMMARY",
    "BreakerConfig",
    "Config",
    "FleetConfig",
    "OtelConfig",
    "PoolConfig",
    "Problem",
    "RetryConfig",
    "env_name",
    "key_path",
    "parse_settings",
]


def parse_settings(
    raw: Any,
    *,
    environ: Mapping[str, str],
    databases: Mapping[str, str],
    caches: Collection[str] = ("default",),
    importable: Callable[[str], bool] | None = None,
    database_settings: Mapping[str, Any] | None = None,
) -> tuple[Config | None, list[Problem]]:
    """Validate ``MINGUS_SESSIONS`` and return ``(config, problems)``.

    ``raw`` is the user's setting (``None`` when absent), ``databases`` maps each
    ``DATABASES`` alias to its ``ENGINE``, ``caches`` lists the ``CACHES``
    aliases. ``database_settings``, the ``DATABASES`` entries themselves, lets the
    transaction-pooling checks read ``OPTIONS`` and ``DISABLE_SERVER_SIDE_CURSORS``.
    ``config`` is ``None`` whenever ``problems`` is not empty. The user's
    dict is never modified.
    """
    out = _Collector()
    setting = _check_setting(raw, out)
    if setting is None:
        return None, out.problems
    # The sections are read in this order, and so their problems are listed: the
    # system checks show them in it, and the tests assert it.
    pools_given, pools = _parse_pools(
        setting.get("POOLS", DEFAULTS["POOLS"]), environ, databases, out, database_settings
    )
    known_pools = ", ".join(pools) or "none"
    default_pool = _default_pool(setting, pools_given, known_pools, out)
    celery_pool = _celery_pool(setting, pools_given, default_pool, known_pools, out)
    monitoring = _monitoring(setting, environ, out)
    retry = _merge_section(setting, "RETRY", out)
    breaker = _merge_section(setting, "CIRCUIT_BREAKER", out)
    fleet = _merge_section(setting, "FLEET", out)
    retry_config = _retry(retry, out)
    fleet_cache = _fleet_cache(fleet, caches, out)
    metrics_token = _metrics_token(setting, out)
    request_commit_hook = _commit_hook(setting, importable, out)
    opentelemetry = _opentelemetry(setting, out)
    config = Config(
        pools=MappingProxyType(pools),
        default_pool=default_pool if isinstance(default_pool, str) else "main",
        celery_pool=celery_pool if isinstance(celery_pool, str) else "main",
        monitoring=_flag(monitoring, "MONITORING", out),
        slow_query_threshold=_threshold(setting, "SLOW_QUERY_THRESHOLD", out, default=1.0),
        log_query_parameters=_flag(
            setting.get("LOG_QUERY_PARAMETERS", False), "LOG_QUERY_PARAMETERS", out
        ),
        leak_threshold=_threshold(setting, "LEAK_THRESHOLD", out, default=30.0),
        retry=retry_config,
        circuit_breaker=_breaker(breaker, out),
        fleet=FleetConfig(cache=fleet_cache, interval=_fleet_interval(fleet, out)),
        metrics_token=metrics_token,
        request_commit_hook=request_commit_hook,
        opentelemetry=opentelemetry,
    )
    if out.problems:
        return None, out.problems
    return config, []
