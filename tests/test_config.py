"""The settings schema, tested as plain Python: ``parse_settings`` over dicts, no Django settings.

Every problem id is asserted with its exact message and hint, since the system
checks and ``ConfigurationError`` show them to users word for word.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Collection, Mapping
from typing import Any

import pytest

from mingus_sessions._core.config import (
    DEFAULTS,
    POOL_DEFAULTS,
    BreakerConfig,
    Config,
    FleetConfig,
    PoolConfig,
    Problem,
    RetryConfig,
    env_name,
    parse_settings,
)

SQLITE = "django.db.backends.sqlite3"
POSTGRESQL = "django.db.backends.postgresql"
DATABASES = {"default": POSTGRESQL, "replica": POSTGRESQL}

POOLS = 'MINGUS_SESSIONS["POOLS"]'
MAIN = 'MINGUS_SESSIONS["POOLS"]["main"]'
TOP_KEYS = (
    "DEFAULT_POOL, CELERY_POOL, POOLS, MONITORING, SLOW_QUERY_THRESHOLD, LOG_QUERY_PARAMETERS, "
    "LEAK_THRESHOLD, RETRY, CIRCUIT_BREAKER, FLEET, METRICS_TOKEN, REQUEST_COMMIT_HOOK"
)
POOL_KEYS = (
    "DATABASE, POOL_CLASS, POOL_SIZE, MAX_OVERFLOW, POOL_RECYCLE, POOL_TIMEOUT, PRE_PING, "
    "USE_LIFO, ECHO, ECHO_POOL, READ_ONLY, ISOLATION_LEVEL, CONNECT_ARGS, SOCKET_TIMEOUT, "
    "PGBOUNCER, PGBOUNCER_PREPARED"
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
        pre_ping=True,
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


def test_transaction_pooling_defaults_to_the_null_pool() -> None:
    """PGBOUNCER "transaction" makes POOL_CLASS "null" unless the pool names a class itself."""
    pools = config_of(
        {
            "POOLS": {
                "bounced": {"PGBOUNCER": "transaction"},
                "queued": {"PGBOUNCER": "transaction", "POOL_CLASS": "queue"},
                "session": {"PGBOUNCER": "session"},
            },
            "DEFAULT_POOL": "bounced",
        }
    ).pools
    assert pools["bounced"].pool_class == "null"
    assert pools["queued"].pool_class == "queue"
    assert pools["session"].pool_class == "queue"


def test_pgbouncer_prepared_with_transaction_pooling() -> None:
    """PGBOUNCER_PREPARED is accepted with "transaction", and then allows a prepare_threshold."""
    pool = config_of(
        _pool(
            PGBOUNCER="transaction",
            PGBOUNCER_PREPARED=True,
            CONNECT_ARGS={"prepare_threshold": 5},
        ),
        database_settings={"default": {"DISABLE_SERVER_SIDE_CURSORS": True}},
    ).pools["main"]
    assert (pool.pgbouncer, pool.pgbouncer_prepared) == ("transaction", True)


def test_transaction_pooling_accepts_what_it_can_carry() -> None:
    """Under transaction pooling, a read-only pool, a prepare_threshold of None, libpq
    parameters other than "options" and empty Django-only keys raise nothing."""
    config_of(
        _pool(
            PGBOUNCER="transaction",
            READ_ONLY=True,
            ISOLATION_LEVEL="REPEATABLE READ",
            CONNECT_ARGS={"prepare_threshold": None, "sslmode": "prefer"},
        ),
        database_settings={
            "default": {
                "OPTIONS": {"assume_role": "", "options": "", "application_name": "x"},
                "DISABLE_SERVER_SIDE_CURSORS": True,
            }
        },
    )


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


# -- environment variables -----------------------------------------------------------


def test_env_names() -> None:
    """The seeds' names: bare for "main", prefixed with the upper-cased pool name otherwise."""
    assert env_name("main", "POOL_SIZE") == "DB_POOL_SIZE"
    assert env_name("celery", "ECHO_POOL") == "CELERY_DB_ECHO_POOL"
    assert env_name("read-replica.2", "POOL_TIMEOUT") == "READ_REPLICA_2_DB_POOL_TIMEOUT"


@pytest.mark.parametrize(
    ("var", "value", "pool", "attribute", "expected"),
    [
        ("DB_POOL_SIZE", "7", "main", "pool_size", 7),
        ("DB_POOL_SIZE", " 0 ", "main", "pool_size", 0),
        ("DB_MAX_OVERFLOW", "3", "main", "max_overflow", 3),
        ("DB_POOL_RECYCLE", "600", "main", "recycle", 600),
        ("DB_POOL_RECYCLE", "-1", "main", "recycle", -1),
        ("DB_POOL_TIMEOUT", "2.5", "main", "timeout", 2.5),
        ("DB_ECHO", "true", "main", "echo", True),
        ("DB_ECHO", "debug", "main", "echo", "debug"),
        ("DB_ECHO_POOL", "1", "main", "echo_pool", True),
        ("DB_ECHO_POOL", "DEBUG", "main", "echo_pool", "debug"),
        ("CELERY_DB_POOL_SIZE", "12", "celery", "pool_size", 12),
        ("CELERY_DB_POOL_TIMEOUT", "9", "celery", "timeout", 9.0),
        ("ANALYTICS_DB_POOL_TIMEOUT", "45", "analytics", "timeout", 45.0),
        ("ANALYTICS_DB_MAX_OVERFLOW", "0", "analytics", "max_overflow", 0),
    ],
)
def test_env_var_overrides_settings(
    var: str, value: str, pool: str, attribute: str, expected: Any
) -> None:
    """Each seeds' variable overrides its pool's key, winning over the value in settings."""
    from_settings = getattr(config_of(SEEDS).pools[pool], attribute)
    assert from_settings != expected
    assert getattr(config_of(SEEDS, {var: value}).pools[pool], attribute) == expected


def test_env_var_of_main_pool_leaves_other_pools_alone() -> None:
    """DB_POOL_SIZE is the "main" pool's only; the other pools keep their settings."""
    config = config_of(SEEDS, {"DB_POOL_SIZE": "2"})
    assert config.pools["main"].pool_size == 2
    assert config.pools["celery"].pool_size == 10
    assert config.pools["analytics"].pool_size == 5


def test_env_false_beats_settings_true() -> None:
    """DB_ECHO=off turns off an ECHO that settings turned on."""
    config = config_of(
        {"POOLS": {"main": {"ECHO": True, "ECHO_POOL": "debug"}}},
        {"DB_ECHO": "off", "DB_ECHO_POOL": "no"},
    )
    assert config.pools["main"].echo is False
    assert config.pools["main"].echo_pool is False


@pytest.mark.parametrize(
    ("value", "setting", "expected"),
    [
        ("0", True, False),
        ("false", True, False),
        ("No", True, False),
        ("off", True, False),
        ("", True, False),
        ("1", False, True),
        ("TRUE", False, True),
        ("yes", False, True),
        (" on ", False, True),
    ],
)
def test_env_enable_monitoring(value: str, setting: bool, expected: bool) -> None:
    """DB_ENABLE_MONITORING overrides MONITORING in either direction."""
    config = config_of({"MONITORING": setting}, {"DB_ENABLE_MONITORING": value})
    assert config.monitoring is expected


def test_env_of_unconfigured_pool_is_ignored() -> None:
    """Variables of a pool that is not configured are not read, malformed or not."""
    config = config_of(None, {"CELERY_DB_POOL_SIZE": "junk", "ANALYTICS_DB_ECHO": "?"})
    assert list(config.pools) == ["main"]


# -- every problem id, exactly --------------------------------------------------------


def E(number: int, msg: str, hint: str) -> Problem:
    return Problem(f"mingus_sessions.E{number:03d}", msg, hint)


def case(
    raw: Any, expected: Problem, *, id: str, env: dict[str, str] | None = None, **kwargs: Any
) -> Any:
    return pytest.param(raw, env or {}, kwargs, expected, id=id)


def _e007_int(key: str, shown: str, minimum: int) -> Problem:
    return E(
        7,
        f"{key} must be an integer, not {shown}.",
        f"Set {key} to a whole number of at least {minimum}.",
    )


def _e007_below(key: str, value: int, minimum: int) -> Problem:
    return E(
        7, f"{key} is {value}, below the minimum of {minimum}.", f"Set {key} to {minimum} or more."
    )


def _e007_number(key: str, shown: str, default: float, *, none: bool = False) -> Problem:
    also = " or None" if none else ""
    return E(
        7,
        f"{key} must be a number of seconds{also}, not {shown}.",
        f"Set {key} to a positive number such as {default}.",
    )


def _e007_positive(key: str, value: float, default: float) -> Problem:
    return E(
        7,
        f"{key} is {value}; it must be greater than 0.",
        f"Set {key} to a positive number such as {default}.",
    )


def _e007_above(key: str, shown: str, *, none: bool = False) -> Problem:
    return E(
        7,
        f"{key} is {shown} seconds, above the maximum of 86400 (a day).",
        f"Set {key} to a number of seconds no greater than 86400"
        + (", or None to turn it off." if none else "."),
    )


def _e011(key: str, shown: str, *, debug: bool = False) -> Problem:
    choices = 'True, False or "debug"' if debug else "True or False"
    return E(11, f"{key} must be {choices}, not {shown}.", f"Set {key} to {choices}.")


def _e010(var: str, raw: str, what: str, hint: str) -> Problem:
    return E(10, f"The environment variable {var}={raw!r} {what}.", hint)


_BOOL_HINT = "one of true, false, 1, 0, yes, no, on, off"
_E006_HINT = (
    f'Set {MAIN}["POOL_CLASS"] to "queue" (the default), "null" (for PgBouncer in transaction '
    'mode) or a path such as "sqlalchemy.pool.StaticPool".'
)


def _e006(shown: str) -> Problem:
    return E(
        6,
        f'{MAIN}["POOL_CLASS"] is {shown}, which is neither "queue", "null" nor the '
        "dotted path of a sqlalchemy.pool.Pool subclass.",
        _E006_HINT,
    )


def _pool(**values: Any) -> dict[str, Any]:
    return {"POOLS": {"main": {"DATABASE": "default", **values}}}


PROBLEM_CASES = [
    # E001: the setting itself
    case(
        ["main"],
        E(
            1,
            "MINGUS_SESSIONS must be a dict, not ['main'].",
            "Define MINGUS_SESSIONS as a dict, or remove it to use the defaults.",
        ),
        id="E001-list",
    ),
    case(
        "main",
        E(
            1,
            "MINGUS_SESSIONS must be a dict, not 'main'.",
            "Define MINGUS_SESSIONS as a dict, or remove it to use the defaults.",
        ),
        id="E001-str",
    ),
    # E002: unknown keys, sections that are not dicts
    case(
        {"POOL": {}},
        E(
            2,
            "MINGUS_SESSIONS has unknown keys: POOL.",
            f"The known keys are {TOP_KEYS}; check the spelling.",
        ),
        id="E002-top-level",
    ),
    case(
        {"b_key": 1, "A_KEY": 2},
        E(
            2,
            "MINGUS_SESSIONS has unknown keys: A_KEY, b_key.",
            f"The known keys are {TOP_KEYS}; check the spelling.",
        ),
        id="E002-top-level-sorted",
    ),
    case(
        {"RETRY": {"MAX_RETRY": 5}},
        E(
            2,
            'MINGUS_SESSIONS["RETRY"] has unknown keys: MAX_RETRY.',
            "The known keys are MAX_RETRIES, BASE_DELAY, MAX_DELAY, JITTER; check the spelling.",
        ),
        id="E002-retry",
    ),
    case(
        {"CIRCUIT_BREAKER": {"THRESHOLD": 3}},
        E(
            2,
            'MINGUS_SESSIONS["CIRCUIT_BREAKER"] has unknown keys: THRESHOLD.',
            "The known keys are ENABLED, FAILURE_THRESHOLD, RECOVERY_TIMEOUT; check the spelling.",
        ),
        id="E002-circuit-breaker",
    ),
    case(
        {"FLEET": {"TIMEOUT": 1}},
        E(
            2,
            'MINGUS_SESSIONS["FLEET"] has unknown keys: TIMEOUT.',
            "The known keys are CACHE, INTERVAL; check the spelling.",
        ),
        id="E002-fleet",
    ),
    case(
        {"RETRY": 3},
        E(
            2,
            'MINGUS_SESSIONS["RETRY"] must be a dict, not 3.',
            "Use a dict with the keys MAX_RETRIES, BASE_DELAY, MAX_DELAY, JITTER.",
        ),
        id="E002-retry-not-dict",
    ),
    # E003: POOLS and its entries
    case(
        {"POOLS": {}},
        E(
            3,
            f"{POOLS} must be a non-empty dict of pools, not {{}}.",
            f'Define at least one pool, e.g. {POOLS} = {{"main": {{"DATABASE": "default"}}}}.',
        ),
        id="E003-empty",
    ),
    case(
        {"POOLS": ["main"]},
        E(
            3,
            f"{POOLS} must be a non-empty dict of pools, not ['main'].",
            f'Define at least one pool, e.g. {POOLS} = {{"main": {{"DATABASE": "default"}}}}.',
        ),
        id="E003-not-dict",
    ),
    case(
        {"POOLS": {"main": "default"}},
        E(
            3,
            f"{MAIN} must be a dict of pool settings, not 'default'.",
            f'Use a dict such as {{"DATABASE": "default", "POOL_SIZE": 5}} for {MAIN}.',
        ),
        id="E003-entry-not-dict",
    ),
    case(
        {"POOLS": {"main": {}, 1: {}}},
        E(
            3,
            f"{POOLS} has a pool named 1; names must be non-empty strings.",
            'Rename the pool, e.g. "main" or "analytics".',
        ),
        id="E003-name-not-str",
    ),
    # E004: unknown pool key
    case(
        _pool(POOLSIZE=3),
        E(
            4,
            f"{MAIN} has unknown keys: POOLSIZE.",
            f"The pool keys are {POOL_KEYS}; check the spelling.",
        ),
        id="E004",
    ),
    # E005: unknown alias
    case(
        {"POOLS": {"reports": {"DATABASE": "reporting"}}, "DEFAULT_POOL": "reports"},
        E(
            5,
            'MINGUS_SESSIONS["POOLS"]["reports"]["DATABASE"] names \'reporting\', which is '
            "not in DATABASES (known: default, replica).",
            'Set MINGUS_SESSIONS["POOLS"]["reports"]["DATABASE"] to one of the aliases in '
            'DATABASES, or add "reporting" to DATABASES.',
        ),
        id="E005",
    ),
    case(
        None,
        E(
            5,
            f"{MAIN}[\"DATABASE\"] names 'default', which is not in DATABASES (known: none).",
            f'Set {MAIN}["DATABASE"] to one of the aliases in DATABASES, or add "default" to '
            "DATABASES.",
        ),
        databases={},
        id="E005-no-databases",
    ),
    # E006: pool class
    case(_pool(POOL_CLASS="static"), _e006("'static'"), id="E006-unknown-name"),
    case(
        _pool(POOL_CLASS="sqlalchemy.engine.Engine"),
        _e006("'sqlalchemy.engine.Engine'"),
        id="E006-not-a-pool",
    ),
    case(
        _pool(POOL_CLASS="sqlalchemy.pool.NoSuchPool"),
        _e006("'sqlalchemy.pool.NoSuchPool'"),
        id="E006-missing-attribute",
    ),
    case(
        _pool(POOL_CLASS="no_such_module.Pool"),
        _e006("'no_such_module.Pool'"),
        id="E006-missing-module",
    ),
    case(_pool(POOL_CLASS=3), _e006("3"), id="E006-not-str"),
    case(
        _pool(POOL_CLASS="sqlalchemy.pool.AsyncAdaptedQueuePool"),
        E(
            6,
            f"{MAIN}[\"POOL_CLASS\"] is 'sqlalchemy.pool.AsyncAdaptedQueuePool', an asyncio "
            "pool, which the pool's synchronous engine cannot use.",
            f'Set {MAIN}["POOL_CLASS"] to "queue" (the default), "null" or a synchronous pool '
            'class such as "sqlalchemy.pool.StaticPool".',
        ),
        id="E006-asyncio-pool",
    ),
    # E007: numbers
    case(_pool(POOL_SIZE=-1), _e007_below(f'{MAIN}["POOL_SIZE"]', -1, 0), id="E007-negative"),
    case(
        _pool(POOL_SIZE="10"), _e007_int(f'{MAIN}["POOL_SIZE"]', "'10'", 0), id="E007-non-numeric"
    ),
    case(_pool(POOL_SIZE=True), _e007_int(f'{MAIN}["POOL_SIZE"]', "True", 0), id="E007-bool"),
    case(
        _pool(MAX_OVERFLOW=2.5),
        _e007_int(f'{MAIN}["MAX_OVERFLOW"]', "2.5", 0),
        id="E007-float-size",
    ),
    case(_pool(POOL_RECYCLE=-2), _e007_below(f'{MAIN}["POOL_RECYCLE"]', -2, -1), id="E007-recycle"),
    case(
        _pool(POOL_TIMEOUT=0),
        _e007_positive(f'{MAIN}["POOL_TIMEOUT"]', 0, 30.0),
        id="E007-zero-timeout",
    ),
    case(
        _pool(POOL_TIMEOUT="30"),
        _e007_number(f'{MAIN}["POOL_TIMEOUT"]', "'30'", 30.0),
        id="E007-timeout-str",
    ),
    case(
        _pool(POOL_TIMEOUT=False),
        _e007_number(f'{MAIN}["POOL_TIMEOUT"]', "False", 30.0),
        id="E007-timeout-bool",
    ),
    case(
        _pool(POOL_TIMEOUT=1e12),
        _e007_above(f'{MAIN}["POOL_TIMEOUT"]', "1e+12"),
        id="E007-timeout-too-long",
    ),
    case(
        {"RETRY": {"BASE_DELAY": 1e12}},
        _e007_above('MINGUS_SESSIONS["RETRY"]["BASE_DELAY"]', "1e+12"),
        id="E007-delay-too-long",
    ),
    case(
        {"LEAK_THRESHOLD": 86401},
        _e007_above('MINGUS_SESSIONS["LEAK_THRESHOLD"]', "86401", none=True),
        id="E007-leak-threshold-too-long",
    ),
    case(
        {"SLOW_QUERY_THRESHOLD": 0},
        _e007_positive('MINGUS_SESSIONS["SLOW_QUERY_THRESHOLD"]', 0, 1.0),
        id="E007-slow-query-zero",
    ),
    case(
        {"SLOW_QUERY_THRESHOLD": float("inf")},
        _e007_number('MINGUS_SESSIONS["SLOW_QUERY_THRESHOLD"]', "inf", 1.0, none=True),
        id="E007-slow-query-inf",
    ),
    case(
        {"LEAK_THRESHOLD": "30"},
        _e007_number('MINGUS_SESSIONS["LEAK_THRESHOLD"]', "'30'", 30.0, none=True),
        id="E007-leak-threshold",
    ),
    case(
        {"RETRY": {"MAX_RETRIES": -1}},
        _e007_below('MINGUS_SESSIONS["RETRY"]["MAX_RETRIES"]', -1, 0),
        id="E007-max-retries",
    ),
    case(
        {"RETRY": {"BASE_DELAY": 1, "MAX_DELAY": 0.5}},
        E(
            7,
            'MINGUS_SESSIONS["RETRY"]["MAX_DELAY"] (0.5) is below '
            'MINGUS_SESSIONS["RETRY"]["BASE_DELAY"] (1.0).',
            "The cap on the delay must be at least the first delay.",
        ),
        id="E007-max-delay-below-base",
    ),
    case(
        {"CIRCUIT_BREAKER": {"FAILURE_THRESHOLD": 0}},
        _e007_below('MINGUS_SESSIONS["CIRCUIT_BREAKER"]["FAILURE_THRESHOLD"]', 0, 1),
        id="E007-failure-threshold",
    ),
    case(
        {"CIRCUIT_BREAKER": {"RECOVERY_TIMEOUT": -5}},
        _e007_positive('MINGUS_SESSIONS["CIRCUIT_BREAKER"]["RECOVERY_TIMEOUT"]', -5, 60.0),
        id="E007-recovery-timeout",
    ),
    case(
        {"FLEET": {"INTERVAL": 0}},
        _e007_positive('MINGUS_SESSIONS["FLEET"]["INTERVAL"]', 0, 10.0),
        id="E007-interval",
    ),
    # E008 / E009: pool names
    case(
        {"DEFAULT_POOL": "primary"},
        E(
            8,
            f"MINGUS_SESSIONS[\"DEFAULT_POOL\"] names 'primary', which is not in {POOLS} "
            "(known: main).",
            'Set MINGUS_SESSIONS["DEFAULT_POOL"] to one of the pools, or add that pool.',
        ),
        id="E008",
    ),
    case(
        {"CELERY_POOL": "workers"},
        E(
            9,
            f"MINGUS_SESSIONS[\"CELERY_POOL\"] names 'workers', which is not in {POOLS} "
            "(known: main).",
            'Set MINGUS_SESSIONS["CELERY_POOL"] to one of the pools, or remove it to use '
            'MINGUS_SESSIONS["DEFAULT_POOL"].',
        ),
        id="E009",
    ),
    # E010: environment variables, by kind
    case(
        None,
        _e010(
            "DB_POOL_SIZE",
            "ten",
            "is not a whole number",
            "Set DB_POOL_SIZE to a whole number of at least 0, or unset it.",
        ),
        env={"DB_POOL_SIZE": "ten"},
        id="E010-int",
    ),
    case(
        None,
        _e010(
            "DB_POOL_SIZE",
            "5.0",
            "is not a whole number",
            "Set DB_POOL_SIZE to a whole number of at least 0, or unset it.",
        ),
        env={"DB_POOL_SIZE": "5.0"},
        id="E010-int-decimal",
    ),
    case(
        None,
        _e010(
            "DB_MAX_OVERFLOW",
            "-1",
            "is below the minimum of 0",
            "Set DB_MAX_OVERFLOW to 0 or more, or unset it.",
        ),
        env={"DB_MAX_OVERFLOW": "-1"},
        id="E010-int-negative",
    ),
    case(
        None,
        _e010(
            "DB_POOL_RECYCLE",
            "-2",
            "is below the minimum of -1",
            "Set DB_POOL_RECYCLE to -1 or more, or unset it.",
        ),
        env={"DB_POOL_RECYCLE": "-2"},
        id="E010-recycle",
    ),
    case(
        None,
        _e010(
            "DB_POOL_TIMEOUT",
            "soon",
            "is not a positive number of seconds up to 86400 (a day)",
            "Set DB_POOL_TIMEOUT to a positive number such as 30, or unset it.",
        ),
        env={"DB_POOL_TIMEOUT": "soon"},
        id="E010-float",
    ),
    case(
        None,
        _e010(
            "DB_POOL_TIMEOUT",
            "0",
            "is not a positive number of seconds up to 86400 (a day)",
            "Set DB_POOL_TIMEOUT to a positive number such as 30, or unset it.",
        ),
        env={"DB_POOL_TIMEOUT": "0"},
        id="E010-float-zero",
    ),
    case(
        None,
        _e010(
            "DB_POOL_TIMEOUT",
            "nan",
            "is not a positive number of seconds up to 86400 (a day)",
            "Set DB_POOL_TIMEOUT to a positive number such as 30, or unset it.",
        ),
        env={"DB_POOL_TIMEOUT": "nan"},
        id="E010-float-nan",
    ),
    case(
        None,
        _e010(
            "DB_POOL_TIMEOUT",
            "1e12",
            "is not a positive number of seconds up to 86400 (a day)",
            "Set DB_POOL_TIMEOUT to a positive number such as 30, or unset it.",
        ),
        env={"DB_POOL_TIMEOUT": "1e12"},
        id="E010-float-too-long",
    ),
    case(
        None,
        _e010(
            "DB_ECHO",
            "maybe",
            "is not a boolean",
            f"Set DB_ECHO to {_BOOL_HINT}, debug, or unset it.",
        ),
        env={"DB_ECHO": "maybe"},
        id="E010-bool",
    ),
    case(
        None,
        _e010(
            "DB_ECHO_POOL",
            "2",
            "is not a boolean",
            f"Set DB_ECHO_POOL to {_BOOL_HINT}, debug, or unset it.",
        ),
        env={"DB_ECHO_POOL": "2"},
        id="E010-bool-echo-pool",
    ),
    case(
        None,
        _e010(
            "DB_ENABLE_MONITORING",
            "debug",
            "is not a boolean",
            f"Set DB_ENABLE_MONITORING to {_BOOL_HINT}, or unset it.",
        ),
        env={"DB_ENABLE_MONITORING": "debug"},
        id="E010-bool-monitoring",
    ),
    case(
        SEEDS,
        _e010(
            "CELERY_DB_POOL_SIZE",
            "x",
            "is not a whole number",
            "Set CELERY_DB_POOL_SIZE to a whole number of at least 0, or unset it.",
        ),
        env={"CELERY_DB_POOL_SIZE": "x"},
        id="E010-named-pool-int",
    ),
    case(
        SEEDS,
        _e010(
            "ANALYTICS_DB_POOL_TIMEOUT",
            "-3",
            "is not a positive number of seconds up to 86400 (a day)",
            "Set ANALYTICS_DB_POOL_TIMEOUT to a positive number such as 30, or unset it.",
        ),
        env={"ANALYTICS_DB_POOL_TIMEOUT": "-3"},
        id="E010-named-pool-float",
    ),
    # E011: booleans
    case(_pool(PRE_PING="yes"), _e011(f'{MAIN}["PRE_PING"]', "'yes'"), id="E011-pre-ping"),
    case(_pool(USE_LIFO=1), _e011(f'{MAIN}["USE_LIFO"]', "1"), id="E011-use-lifo"),
    case(_pool(READ_ONLY="true"), _e011(f'{MAIN}["READ_ONLY"]', "'true'"), id="E011-read-only"),
    case(_pool(ECHO="verbose"), _e011(f'{MAIN}["ECHO"]', "'verbose'", debug=True), id="E011-echo"),
    case(
        _pool(ECHO_POOL=None),
        _e011(f'{MAIN}["ECHO_POOL"]', "None", debug=True),
        id="E011-echo-pool",
    ),
    case(
        {"MONITORING": "on"}, _e011('MINGUS_SESSIONS["MONITORING"]', "'on'"), id="E011-monitoring"
    ),
    case(
        {"LOG_QUERY_PARAMETERS": 1},
        _e011('MINGUS_SESSIONS["LOG_QUERY_PARAMETERS"]', "1"),
        id="E011-log-query-parameters",
    ),
    case(
        {"RETRY": {"JITTER": "no"}},
        _e011('MINGUS_SESSIONS["RETRY"]["JITTER"]', "'no'"),
        id="E011-jitter",
    ),
    case(
        {"CIRCUIT_BREAKER": {"ENABLED": None}},
        _e011('MINGUS_SESSIONS["CIRCUIT_BREAKER"]["ENABLED"]', "None"),
        id="E011-breaker",
    ),
    # E012: isolation level
    case(
        _pool(ISOLATION_LEVEL="SNAPSHOT"),
        E(
            12,
            f"{MAIN}[\"ISOLATION_LEVEL\"] is 'SNAPSHOT', not an isolation level.",
            f'Set {MAIN}["ISOLATION_LEVEL"] to None or one of AUTOCOMMIT, READ UNCOMMITTED, '
            "READ COMMITTED, REPEATABLE READ, SERIALIZABLE.",
        ),
        id="E012-name",
    ),
    case(
        _pool(ISOLATION_LEVEL=4),
        E(
            12,
            f'{MAIN}["ISOLATION_LEVEL"] is 4, not an isolation level.',
            f'Set {MAIN}["ISOLATION_LEVEL"] to None or one of AUTOCOMMIT, READ UNCOMMITTED, '
            "READ COMMITTED, REPEATABLE READ, SERIALIZABLE.",
        ),
        id="E012-int",
    ),
    # E013: CONNECT_ARGS
    case(
        _pool(CONNECT_ARGS=["sslmode=require"]),
        E(
            13,
            f"{MAIN}[\"CONNECT_ARGS\"] must be a dict, not ['sslmode=require'].",
            f'Set {MAIN}["CONNECT_ARGS"] to a dict of DB-API connect() keyword arguments.',
        ),
        id="E013",
    ),
    # E007: SOCKET_TIMEOUT, a number of seconds of at least 5, or None
    case(
        _pool(SOCKET_TIMEOUT=4),
        E(
            7,
            f'{MAIN}["SOCKET_TIMEOUT"] is 4, below the minimum of 5.',
            f'Set {MAIN}["SOCKET_TIMEOUT"] to 5 or more (seconds), or to None to leave dead '
            "connections to the operating system's TCP timeouts.",
        ),
        id="E007-socket-timeout-below-minimum",
    ),
    case(
        _pool(SOCKET_TIMEOUT=0),
        _e007_positive(f'{MAIN}["SOCKET_TIMEOUT"]', 0, 30.0),
        id="E007-socket-timeout-zero",
    ),
    case(
        _pool(SOCKET_TIMEOUT="30"),
        _e007_number(f'{MAIN}["SOCKET_TIMEOUT"]', "'30'", 30.0, none=True),
        id="E007-socket-timeout-str",
    ),
    case(
        _pool(PGBOUNCER="transaction", PGBOUNCER_PREPARED="yes"),
        _e011(f'{MAIN}["PGBOUNCER_PREPARED"]', "'yes'"),
        id="E011-pgbouncer-prepared",
    ),
    # E014: unsupported backend
    case(
        None,
        E(
            14,
            'DATABASES["default"]["ENGINE"] is \'django.db.backends.dummy\': pool "main" '
            f'({MAIN}["DATABASE"]) cannot build a SQLAlchemy engine for it.',
            "Supported: PostgreSQL, SQLite, MySQL/MariaDB and Oracle, through Django's own "
            "backends or GeoDjango's.",
        ),
        databases={"default": "django.db.backends.dummy"},
        id="E014",
    ),
    # E015: fleet cache
    case(
        {"FLEET": {"CACHE": "redis"}},
        E(
            15,
            'MINGUS_SESSIONS["FLEET"]["CACHE"] names \'redis\', which is not in CACHES '
            "(known: default).",
            'Set MINGUS_SESSIONS["FLEET"]["CACHE"] to a CACHES alias (a shared cache such as '
            "Redis lets every process see the fleet).",
        ),
        id="E015",
    ),
    case(
        None,
        E(
            15,
            'MINGUS_SESSIONS["FLEET"]["CACHE"] names \'default\', which is not in CACHES '
            "(known: none).",
            'Set MINGUS_SESSIONS["FLEET"]["CACHE"] to a CACHES alias (a shared cache such as '
            "Redis lets every process see the fleet).",
        ),
        caches=(),
        id="E015-no-caches",
    ),
    # E016: token and hook
    case(
        {"METRICS_TOKEN": ""},
        E(
            16,
            'MINGUS_SESSIONS["METRICS_TOKEN"] must be a non-empty string or None.',
            'Set MINGUS_SESSIONS["METRICS_TOKEN"] to a long random string, or None.',
        ),
        id="E016-empty-token",
    ),
    case(
        {"METRICS_TOKEN": 1234},
        E(
            16,
            'MINGUS_SESSIONS["METRICS_TOKEN"] must be a non-empty string or None.',
            'Set MINGUS_SESSIONS["METRICS_TOKEN"] to a long random string, or None.',
        ),
        id="E016-int-token",
    ),
    *(
        case(
            {"METRICS_TOKEN": token},
            E(
                16,
                'MINGUS_SESSIONS["METRICS_TOKEN"] has characters other than visible ASCII '
                "(letters, digits and punctuation, no spaces): servers such as gunicorn read "
                "request headers as Latin-1, so a client sending it would be refused.",
                'Set MINGUS_SESSIONS["METRICS_TOKEN"] to a long random ASCII string, e.g. the '
                'output of python -c "import secrets; print(secrets.token_urlsafe(32))".',
            ),
            id=f"E016-{name}-token",
        )
        for name, token in [
            ("accented", "jeton-sécurité-ß"),
            ("emoji", "token-\N{KEY}"),
            ("padded", " token "),
            ("spaced", "two words"),
            ("control", "token\x7f"),
        ]
    ),
    case(
        {"REQUEST_COMMIT_HOOK": "app.hooks.nope"},
        E(
            16,
            "MINGUS_SESSIONS[\"REQUEST_COMMIT_HOOK\"] is 'app.hooks.nope', not the dotted "
            "path of an importable callable.",
            'Set MINGUS_SESSIONS["REQUEST_COMMIT_HOOK"] to a path such as '
            '"myproject.hooks.should_commit", or None.',
        ),
        importable=lambda path: False,
        id="E016-hook-not-importable",
    ),
    case(
        {"REQUEST_COMMIT_HOOK": 42},
        E(
            16,
            'MINGUS_SESSIONS["REQUEST_COMMIT_HOOK"] is 42, not the dotted path of an '
            "importable callable.",
            'Set MINGUS_SESSIONS["REQUEST_COMMIT_HOOK"] to a path such as '
            '"myproject.hooks.should_commit", or None.',
        ),
        id="E016-hook-not-str",
    ),
    # E017: PGBOUNCER itself
    case(
        _pool(PGBOUNCER="statement"),
        E(
            17,
            f"{MAIN}[\"PGBOUNCER\"] is 'statement', not a PgBouncer pool mode this pool can use.",
            f'Set {MAIN}["PGBOUNCER"] to "transaction" or "session" (PgBouncer\'s pool_mode for '
            "this database), or to None when the pool connects to PostgreSQL directly.",
        ),
        id="E017-mode",
    ),
    case(
        _pool(PGBOUNCER=True),
        E(
            17,
            f'{MAIN}["PGBOUNCER"] is True, not a PgBouncer pool mode this pool can use.',
            f'Set {MAIN}["PGBOUNCER"] to "transaction" or "session" (PgBouncer\'s pool_mode for '
            "this database), or to None when the pool connects to PostgreSQL directly.",
        ),
        id="E017-bool",
    ),
    case(
        _pool(PGBOUNCER="transaction"),
        E(
            17,
            f'{MAIN}["PGBOUNCER"] is "transaction", but the pool\'s database '
            'DATABASES["default"] is not PostgreSQL: PgBouncer only fronts PostgreSQL.',
            f'Remove {MAIN}["PGBOUNCER"], or set {MAIN}["DATABASE"] to a PostgreSQL database.',
        ),
        databases={"default": SQLITE},
        id="E017-not-postgresql",
    ),
    case(
        _pool(PGBOUNCER_PREPARED=True),
        E(
            17,
            f'{MAIN}["PGBOUNCER_PREPARED"] is True, but {MAIN}["PGBOUNCER"] is None: it only '
            "applies to PgBouncer in transaction mode.",
            f'Set {MAIN}["PGBOUNCER"] to "transaction" if the pool goes through PgBouncer in '
            f'transaction mode, or remove {MAIN}["PGBOUNCER_PREPARED"].',
        ),
        id="E017-prepared-without-transaction",
    ),
    # E018: settings that break under transaction pooling
    case(
        _pool(PGBOUNCER="transaction", CONNECT_ARGS={"prepare_threshold": 5}),
        E(
            18,
            f'{MAIN}["CONNECT_ARGS"]["prepare_threshold"] is 5, but {MAIN}["PGBOUNCER"] is '
            '"transaction": the driver\'s prepared statements live in one server session and '
            "fail on the next one PgBouncer hands out.",
            f'Remove {MAIN}["CONNECT_ARGS"]["prepare_threshold"] (the pool turns prepared '
            f'statements off), or set {MAIN}["PGBOUNCER_PREPARED"] to True if PgBouncer (1.21 '
            "or later) tracks them (max_prepared_statements).",
        ),
        database_settings={"default": {"DISABLE_SERVER_SIDE_CURSORS": True}},
        id="E018-prepare-threshold-connect-args",
    ),
    case(
        _pool(PGBOUNCER="transaction"),
        E(
            18,
            'DATABASES["default"]["OPTIONS"]["prepare_threshold"] is 0, but '
            f'{MAIN}["PGBOUNCER"] is "transaction": the driver\'s prepared statements live in '
            "one server session and fail on the next one PgBouncer hands out.",
            'Remove DATABASES["default"]["OPTIONS"]["prepare_threshold"] (the pool turns '
            f'prepared statements off), or set {MAIN}["PGBOUNCER_PREPARED"] to True if '
            "PgBouncer (1.21 or later) tracks them (max_prepared_statements).",
        ),
        database_settings={
            "default": {"OPTIONS": {"prepare_threshold": 0}, "DISABLE_SERVER_SIDE_CURSORS": True}
        },
        id="E018-prepare-threshold-options",
    ),
    case(
        _pool(PGBOUNCER="transaction", CONNECT_ARGS={"options": "-c search_path=app"}),
        E(
            18,
            f'{MAIN}["CONNECT_ARGS"]["options"] sends the startup parameter "options", but '
            f'{MAIN}["PGBOUNCER"] is "transaction": PgBouncer refuses it ("unsupported startup '
            'parameter") or, with ignore_startup_parameters, drops it silently.',
            "Set those parameters on the server instead (ALTER ROLE ... SET, ALTER DATABASE "
            "... SET), or per transaction with SET LOCAL.",
        ),
        database_settings={"default": {"DISABLE_SERVER_SIDE_CURSORS": True}},
        id="E018-startup-options",
    ),
    case(
        _pool(PGBOUNCER="transaction"),
        E(
            18,
            'DATABASES["default"]["OPTIONS"]["assume_role"] runs SET ROLE on each new '
            f'connection, but {MAIN}["PGBOUNCER"] is "transaction": the role would reach other '
            "clients' transactions, and be missing from this pool's.",
            'Connect as that role (DATABASES["default"]["USER"]), or set '
            f'{MAIN}["PGBOUNCER"] to "session" if PgBouncer runs this database in session mode.',
        ),
        database_settings={
            "default": {"OPTIONS": {"assume_role": "reader"}, "DISABLE_SERVER_SIDE_CURSORS": True}
        },
        id="E018-assume-role",
    ),
    case(
        _pool(PGBOUNCER="transaction", READ_ONLY=True, ISOLATION_LEVEL="autocommit"),
        E(
            18,
            f'{MAIN}["READ_ONLY"] is True with {MAIN}["ISOLATION_LEVEL"] "AUTOCOMMIT", but '
            f'{MAIN}["PGBOUNCER"] is "transaction": statements run outside any transaction, '
            "and a session-wide read-only setting would reach other clients.",
            f'Remove {MAIN}["ISOLATION_LEVEL"] from this pool, or connect with a role that may '
            "only read.",
        ),
        database_settings={"default": {"DISABLE_SERVER_SIDE_CURSORS": True}},
        id="E018-read-only-autocommit",
    ),
    # E019: Django's own server-side cursors behind the same transaction pooler
    case(
        _pool(PGBOUNCER="transaction"),
        E(
            19,
            'DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] is not True, but '
            f'{MAIN}["PGBOUNCER"] is "transaction" on that database: the Django ORM\'s '
            "server-side cursors (QuerySet.iterator()) are declared WITH HOLD and fail under "
            "transaction pooling.",
            'Set DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = True, as Django\'s '
            "documentation asks for transaction pooling.",
        ),
        database_settings={"default": {"ENGINE": POSTGRESQL}},
        id="E019",
    ),
]


@pytest.mark.parametrize(("raw", "env", "kwargs", "expected"), PROBLEM_CASES)
def test_problem(raw: Any, env: dict[str, str], kwargs: dict[str, Any], expected: Problem) -> None:
    """Each invalid setting gives exactly one problem: its stable id, message and hint."""
    config, problems = parse(raw, env, **kwargs)
    assert problems == [expected]
    assert config is None


def test_every_check_id_is_covered() -> None:
    """The cases above exercise every id from E001 to E019."""
    covered = {param.values[-1].id for param in PROBLEM_CASES}  # type: ignore[attr-defined]
    assert covered == {f"mingus_sessions.E{n:03d}" for n in range(1, 20)}


def test_all_problems_are_reported_at_once() -> None:
    """Validation goes on after the first problem, so one `check` run lists every mistake."""
    raw = {
        "zzz": 1,
        "POOLS": {
            "main": {
                "DATABASE": "nope",
                "POOL_CLASS": "z",
                "ISOLATION_LEVEL": "x",
                "CONNECT_ARGS": 1,
                "POOL_SIZE": -1,
            }
        },
        "FLEET": {"CACHE": "x"},
        "MONITORING": "y",
    }
    config, problems = parse(raw, {"DB_MAX_OVERFLOW": "many"})
    assert config is None
    assert [p.id.removeprefix("mingus_sessions.") for p in problems] == [
        "E002",
        "E010",
        "E005",
        "E006",
        "E012",
        "E013",
        "E007",
        "E015",
        "E011",
    ]


def test_importable_receives_the_hook_path() -> None:
    """The hook path is handed to the importable callback, which decides E016."""
    seen: list[str] = []

    def importable(path: str) -> bool:
        seen.append(path)
        return True

    config_of({"REQUEST_COMMIT_HOOK": "app.hooks.commit"}, importable=importable)
    assert seen == ["app.hooks.commit"]


# -- edge cases of names and backends ------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected_id"),
    [
        ({"DEFAULT_POOL": ["main"]}, "mingus_sessions.E008"),
        ({"CELERY_POOL": {"name": "celery"}}, "mingus_sessions.E009"),
    ],
)
def test_unhashable_pool_name_is_a_problem(raw: dict[str, Any], expected_id: str) -> None:
    """A DEFAULT_POOL or CELERY_POOL that is not a string is reported, not a crash."""
    _, problems = parse(raw)
    assert [p.id for p in problems] == [expected_id]


def test_non_string_database_hint_is_sensible() -> None:
    """A DATABASE that is not a string is reported without suggesting to add it to DATABASES."""
    _, problems = parse(_pool(DATABASE=None))
    assert [p.msg for p in problems] == [
        f'{MAIN}["DATABASE"] names None, which is not in DATABASES (known: default, replica).'
    ]
    assert '"None"' not in problems[0].hint


@pytest.mark.parametrize(
    "engine",
    ["django.contrib.gis.db.backends.postgis", "django.contrib.gis.db.backends.spatialite"],
)
def test_geodjango_backends_are_supported(engine: str) -> None:
    """A project on GeoDjango's backends can build engines for its databases."""
    assert parse(None, databases={"default": engine})[1] == []
