"""The settings schema, tested as plain Python: ``parse_settings`` over dicts, no Django settings.

What valid settings parse to: the defaults, the merge over them, the accepted values.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from mingus_sessions._core.config import (
    DEFAULTS,
    POOL_DEFAULTS,
    BreakerConfig,
    FleetConfig,
    PoolConfig,
    RetryConfig,
)
from tests.core.config_helpers import SEEDS, config_of, seeds_with

# -- zero configuration and defaults ---------------------------------------------------


def test_zero_configuration_is_one_main_pool_on_default() -> None:
    """With no MINGUS_SESSIONS at all there is one pool, "main", on DATABASES["default"]."""
    config = config_of(None)
    assert list(config.pools) == ["main"]
    assert config.pools["main"] == PoolConfig(
        name="main",
        database="default",
        pool_class="queue",
        pool_size=5,
        max_overflow=10,
        recycle=1800,
        timeout=30.0,
        max_waiting=0,
        pre_ping=True,
        ping_idle=1.0,
        use_lifo=False,
        echo=False,
        echo_pool=False,
        read_only=False,
        isolation_level=None,
        connect_args={},
        socket_timeout=30.0,
        pgbouncer=None,
        pgbouncer_prepared=False,
    )
    assert config.default_pool == "main"
    assert config.celery_pool == "main"
    assert config.monitoring is True
    assert config.slow_query_threshold == 1.0
    assert config.log_query_parameters is False
    assert config.leak_threshold == 30.0
    assert config.retry == RetryConfig(max_retries=3, base_delay=0.1, max_delay=30.0, jitter=True)
    assert config.circuit_breaker == BreakerConfig(
        enabled=True, failure_threshold=5, recovery_timeout=60.0
    )
    assert config.fleet == FleetConfig(cache="default", interval=10.0)
    assert config.metrics_token is None
    assert config.request_commit_hook is None


def test_empty_dict_is_the_same_as_no_setting() -> None:
    """An empty MINGUS_SESSIONS dict means every default."""
    assert config_of({}) == config_of(None)


def test_pool_lookup_and_capacity() -> None:
    """Config.pool(None) is the default pool; capacity is size plus overflow."""
    config = config_of(SEEDS)
    assert config.pool(None) is config.pools["main"]
    assert config.pool("analytics").database == "replica"
    assert config.pool("main").capacity == 50
    with pytest.raises(KeyError):
        config.pool("nope")


def test_seeds_example_parses() -> None:
    """The example of DESIGN.md gives the three seeds' pools with their values."""
    config = config_of(SEEDS)
    assert list(config.pools) == ["main", "celery", "analytics"]
    main, celery, analytics = (config.pools[n] for n in ("main", "celery", "analytics"))
    assert (main.pool_size, main.max_overflow, main.recycle, main.timeout) == (20, 30, 3600, 30.0)
    assert (celery.pool_size, celery.max_overflow, celery.recycle) == (10, 20, 1800)
    assert (analytics.database, analytics.timeout, analytics.read_only) == ("replica", 60.0, True)
    assert config.celery_pool == "celery"


# -- merging over defaults ------------------------------------------------------------


def test_user_dict_and_defaults_are_never_mutated() -> None:
    """Parsing (with environment overrides too) leaves the user's dict and DEFAULTS as they were."""
    raw = seeds_with(main={"CONNECT_ARGS": {"sslmode": "require"}})
    raw_before = copy.deepcopy(raw)
    defaults_before = copy.deepcopy(dict(DEFAULTS))
    pool_defaults_before = copy.deepcopy(dict(POOL_DEFAULTS))

    config = config_of(raw, {"DB_POOL_SIZE": "3", "CELERY_DB_ECHO": "1"})

    assert raw == raw_before
    assert dict(DEFAULTS) == defaults_before
    assert dict(POOL_DEFAULTS) == pool_defaults_before
    # Later changes to the user's dict do not leak into the parsed config either.
    raw["POOLS"]["main"]["CONNECT_ARGS"]["sslmode"] = "disable"
    assert config.pools["main"].connect_args == {"sslmode": "require"}


def test_parsed_config_is_read_only() -> None:
    """Pools and CONNECT_ARGS are read-only mappings, so no caller can change the cached config."""
    config = config_of(seeds_with(main={"CONNECT_ARGS": {"sslmode": "require"}}))
    with pytest.raises(TypeError):
        config.pools["main"].connect_args["sslmode"] = "disable"  # type: ignore[index]
    with pytest.raises(TypeError):
        config.pools["x"] = config.pools["main"]  # type: ignore[index]


def test_pools_replace_the_default_pools() -> None:
    """POOLS is not merged: the pools given are the only pools."""
    config = config_of({"POOLS": {"web": {"DATABASE": "replica"}}, "DEFAULT_POOL": "web"})
    assert list(config.pools) == ["web"]
    assert config.default_pool == "web"


def test_pool_keys_default_one_by_one() -> None:
    """A pool that sets one key gets the per-pool default for every other key."""
    pool = config_of({"POOLS": {"main": {"POOL_SIZE": 1}}}).pools["main"]
    assert pool == PoolConfig(name="main", database="default", pool_size=1)


@pytest.mark.parametrize(
    ("section", "given", "attribute", "expected"),
    [
        ("RETRY", {"MAX_RETRIES": 5}, "retry", RetryConfig(5, 0.1, 30.0, True)),
        ("RETRY", {"JITTER": False, "MAX_DELAY": 2}, "retry", RetryConfig(3, 0.1, 2.0, False)),
        ("CIRCUIT_BREAKER", {"ENABLED": False}, "circuit_breaker", BreakerConfig(False, 5, 60.0)),
        ("CIRCUIT_BREAKER", {"FAILURE_THRESHOLD": 2}, "circuit_breaker", BreakerConfig(True, 2)),
        (
            "CIRCUIT_BREAKER",
            {"SHARED": True},
            "circuit_breaker",
            BreakerConfig(True, 5, 60.0, shared=True),
        ),
        ("FLEET", {"INTERVAL": 2}, "fleet", FleetConfig("default", 2.0)),
        ("FLEET", {"CACHE": "shared"}, "fleet", FleetConfig("shared", 10.0)),
    ],
)
def test_sections_merge_key_by_key(
    section: str, given: dict[str, Any], attribute: str, expected: object
) -> None:
    """RETRY, CIRCUIT_BREAKER and FLEET are merged over their defaults key by key."""
    config = config_of({section: given}, caches=("default", "shared"))
    assert getattr(config, attribute) == expected


@pytest.mark.parametrize(
    ("key", "value", "attribute", "expected"),
    [
        ("POOL_CLASS", "null", "pool_class", "null"),
        ("POOL_CLASS", "sqlalchemy.pool.StaticPool", "pool_class", "sqlalchemy.pool.StaticPool"),
        ("POOL_RECYCLE", None, "recycle", -1),
        ("POOL_RECYCLE", -1, "recycle", -1),
        ("POOL_TIMEOUT", 2.5, "timeout", 2.5),
        ("POOL_SIZE", 0, "pool_size", 0),
        ("ECHO", "debug", "echo", "debug"),
        ("ECHO_POOL", "debug", "echo_pool", "debug"),
        ("ISOLATION_LEVEL", "read committed", "isolation_level", "READ COMMITTED"),
        ("ISOLATION_LEVEL", "AUTOCOMMIT", "isolation_level", "AUTOCOMMIT"),
        ("CONNECT_ARGS", {"sslmode": "require"}, "connect_args", {"sslmode": "require"}),
        ("SOCKET_TIMEOUT", None, "socket_timeout", None),
        ("SOCKET_TIMEOUT", 5, "socket_timeout", 5.0),
        ("SOCKET_TIMEOUT", 12.5, "socket_timeout", 12.5),
        ("PGBOUNCER", "session", "pgbouncer", "session"),
        ("PGBOUNCER", "transaction", "pgbouncer", "transaction"),
    ],
)
def test_valid_pool_values(key: str, value: Any, attribute: str, expected: Any) -> None:
    """Accepted pool values, normalised where the schema normalises them."""
    pool = config_of({"POOLS": {"main": {key: value}}}).pools["main"]
    assert getattr(pool, attribute) == expected


def test_optional_thresholds_may_be_none() -> None:
    """SLOW_QUERY_THRESHOLD and LEAK_THRESHOLD accept None (turned off)."""
    config = config_of({"SLOW_QUERY_THRESHOLD": None, "LEAK_THRESHOLD": None})
    assert config.slow_query_threshold is None
    assert config.leak_threshold is None


@pytest.mark.parametrize("importable", [None, lambda path: path == "app.hooks.commit"])
def test_valid_token_and_hook(importable: Callable[[str], bool] | None) -> None:
    """A non-empty token and an importable hook path are kept as given."""
    config = config_of(
        {"METRICS_TOKEN": "t0ken", "REQUEST_COMMIT_HOOK": "app.hooks.commit"},
        importable=importable,
    )
    assert config.metrics_token == "t0ken"
    assert config.request_commit_hook == "app.hooks.commit"


@pytest.mark.parametrize(
    "token",
    ["kHq2N-8_vxT0aZ", "".join(map(chr, range(0x21, 0x7F)))],
    ids=["urlsafe", "every-visible-ascii-character"],
)
def test_visible_ascii_tokens_are_kept(token: str) -> None:
    """Any token of visible ASCII characters, punctuation included, is accepted as given."""
    assert config_of({"METRICS_TOKEN": token}).metrics_token == token


# -- CELERY_POOL ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, "main"),
        ({"POOLS": {"web": {}}, "DEFAULT_POOL": "web"}, "web"),
        ({"POOLS": {"main": {}, "celery": {}}}, "celery"),
        ({"POOLS": {"main": {}, "celery": {}}, "CELERY_POOL": "main"}, "main"),
        ({"POOLS": {"main": {}, "jobs": {}}, "CELERY_POOL": "jobs"}, "jobs"),
    ],
)
def test_celery_pool(raw: Any, expected: str) -> None:
    """CELERY_POOL left at its default falls back to DEFAULT_POOL when there is no "celery" pool."""
    assert config_of(raw).celery_pool == expected


@pytest.mark.parametrize(
    ("given", "metrics", "traces"),
    [
        (None, True, True),
        (False, False, False),
        (True, True, True),
        ({"TRACES": False}, True, False),
        ({"METRICS": False, "TRACES": True}, False, True),
    ],
)
def test_opentelemetry_is_both_signals_or_each_one(given: Any, metrics: bool, traces: bool) -> None:
    """OPENTELEMETRY: a boolean for both signals, or a dict whose missing keys stay on."""
    raw = {} if given is None else {"OPENTELEMETRY": given}
    config = config_of(raw)
    assert (config.opentelemetry.metrics, config.opentelemetry.traces) == (metrics, traces)
