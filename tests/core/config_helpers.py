"""What the settings-schema tests share: the seeds' example, the parse helpers, exact problems.

Plain Python over ``mingus_sessions._core.config``: nothing here needs Django settings.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Collection, Mapping
from typing import Any

import pytest

from mingus_sessions._core.config import Config, Problem, parse_settings

SQLITE = "django.db.backends.sqlite3"
POSTGRESQL = "django.db.backends.postgresql"
DATABASES = {"default": POSTGRESQL, "replica": POSTGRESQL}

POOLS = 'MINGUS_SESSIONS["POOLS"]'
MAIN = 'MINGUS_SESSIONS["POOLS"]["main"]'
TOP_KEYS = (
    "DEFAULT_POOL, CELERY_POOL, POOLS, MONITORING, SLOW_QUERY_THRESHOLD, LOG_QUERY_PARAMETERS, "
    "LEAK_THRESHOLD, RETRY, CIRCUIT_BREAKER, FLEET, METRICS_TOKEN, REQUEST_COMMIT_HOOK, "
    "OPENTELEMETRY"
)
POOL_KEYS = (
    "DATABASE, POOL_CLASS, POOL_SIZE, MAX_OVERFLOW, POOL_RECYCLE, POOL_TIMEOUT, MAX_WAITING, "
    "PRE_PING, PING_IDLE, USE_LIFO, ECHO, ECHO_POOL, READ_ONLY, ISOLATION_LEVEL, CONNECT_ARGS, "
    "SOCKET_TIMEOUT, PGBOUNCER, PGBOUNCER_PREPARED, REPLICAS, MAX_REPLICA_LAG"
)

#: The example from DESIGN.md: the seeds' three pools.
SEEDS: dict[str, Any] = {
    "DEFAULT_POOL": "main",
    "CELERY_POOL": "celery",
    "POOLS": {
        "main": {
            "DATABASE": "default",
            "POOL_SIZE": 20,
            "MAX_OVERFLOW": 30,
            "POOL_RECYCLE": 3600,
            "POOL_TIMEOUT": 30,
        },
        "celery": {
            "DATABASE": "default",
            "POOL_SIZE": 10,
            "MAX_OVERFLOW": 20,
            "POOL_RECYCLE": 1800,
            "POOL_TIMEOUT": 30,
        },
        "analytics": {
            "DATABASE": "replica",
            "POOL_SIZE": 5,
            "MAX_OVERFLOW": 10,
            "POOL_RECYCLE": 7200,
            "POOL_TIMEOUT": 60,
            "READ_ONLY": True,
        },
    },
    "MONITORING": True,
    "SLOW_QUERY_THRESHOLD": 1.0,
    "LOG_QUERY_PARAMETERS": False,
    "LEAK_THRESHOLD": 30.0,
    "RETRY": {"MAX_RETRIES": 3, "BASE_DELAY": 0.1, "MAX_DELAY": 30.0, "JITTER": True},
    "CIRCUIT_BREAKER": {"ENABLED": True, "FAILURE_THRESHOLD": 5, "RECOVERY_TIMEOUT": 60.0},
    "FLEET": {"CACHE": "default", "INTERVAL": 10.0},
    "METRICS_TOKEN": None,
    "REQUEST_COMMIT_HOOK": None,
}


def parse(
    raw: Any,
    env: Mapping[str, str] | None = None,
    *,
    databases: Mapping[str, str] = DATABASES,
    caches: Collection[str] = ("default",),
    importable: Callable[[str], bool] | None = None,
    database_settings: Mapping[str, Any] | None = None,
) -> tuple[Config | None, list[Problem]]:
    return parse_settings(
        raw,
        environ=env or {},
        databases=databases,
        caches=caches,
        importable=importable,
        database_settings=database_settings,
    )


def config_of(raw: Any, env: Mapping[str, str] | None = None, **kwargs: Any) -> Config:
    config, problems = parse(raw, env, **kwargs)
    assert problems == []
    assert config is not None
    return config


def seeds_with(**pools: dict[str, Any]) -> dict[str, Any]:
    raw = copy.deepcopy(SEEDS)
    for name, values in pools.items():
        raw["POOLS"][name].update(values)
    return raw


def E(number: int, msg: str, hint: str) -> Problem:
    return Problem(f"mingus_sessions.E{number:03d}", msg, hint)


def case(
    raw: Any, expected: Problem, *, id: str, env: dict[str, str] | None = None, **kwargs: Any
) -> Any:
    return pytest.param(raw, env or {}, kwargs, expected, id=id)


def e007_int(key: str, shown: str, minimum: int) -> Problem:
    return E(
        7,
        f"{key} must be an integer, not {shown}.",
        f"Set {key} to a whole number of at least {minimum}.",
    )


def e007_below(key: str, value: int, minimum: int) -> Problem:
    return E(
        7, f"{key} is {value}, below the minimum of {minimum}.", f"Set {key} to {minimum} or more."
    )


def e007_number(key: str, shown: str, default: float, *, none: bool = False) -> Problem:
    also = " or None" if none else ""
    return E(
        7,
        f"{key} must be a number of seconds{also}, not {shown}.",
        f"Set {key} to a positive number such as {default}.",
    )


def e007_positive(key: str, value: float, default: float) -> Problem:
    return E(
        7,
        f"{key} is {value}; it must be greater than 0.",
        f"Set {key} to a positive number such as {default}.",
    )


def e007_above(key: str, shown: str, *, none: bool = False) -> Problem:
    return E(
        7,
        f"{key} is {shown} seconds, above the maximum of 86400 (a day).",
        f"Set {key} to a number of seconds no greater than 86400"
        + (", or None to turn it off." if none else "."),
    )


def e011(key: str, shown: str, *, debug: bool = False, also: str | None = None) -> Problem:
    choices = 'True, False or "debug"' if debug else "True or False"
    if also is not None:
        choices = f'True, False or "{also}"'
    return E(11, f"{key} must be {choices}, not {shown}.", f"Set {key} to {choices}.")


def main_pool(**values: Any) -> dict[str, Any]:
    return {"POOLS": {"main": {"DATABASE": "default", **values}}}
