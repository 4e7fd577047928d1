"""The problems of ``POOLS`` and of each pool's keys (E003-E007, E011-E014), exactly.

Every problem is asserted with its exact message and hint, since the system
checks and ``ConfigurationError`` show them to users word for word.
"""

from __future__ import annotations

from typing import Any

import pytest

from mingus_sessions._core.config import Problem
from tests.core.config_helpers import (
    MAIN,
    POOL_KEYS,
    POOLS,
    E,
    case,
    e007_above,
    e007_below,
    e007_int,
    e007_number,
    e007_positive,
    e011,
    main_pool,
    parse,
)

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


POOL_CASES = [
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
        main_pool(POOLSIZE=3),
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
    case(main_pool(POOL_CLASS="static"), _e006("'static'"), id="E006-unknown-name"),
    case(
        main_pool(POOL_CLASS="sqlalchemy.engine.Engine"),
        _e006("'sqlalchemy.engine.Engine'"),
        id="E006-not-a-pool",
    ),
    case(
        main_pool(POOL_CLASS="sqlalchemy.pool.NoSuchPool"),
        _e006("'sqlalchemy.pool.NoSuchPool'"),
        id="E006-missing-attribute",
    ),
    case(
        main_pool(POOL_CLASS="no_such_module.Pool"),
        _e006("'no_such_module.Pool'"),
        id="E006-missing-module",
    ),
    case(main_pool(POOL_CLASS=3), _e006("3"), id="E006-not-str"),
    case(
        main_pool(POOL_CLASS="sqlalchemy.pool.AsyncAdaptedQueuePool"),
        E(
            6,
            f"{MAIN}[\"POOL_CLASS\"] is 'sqlalchemy.pool.AsyncAdaptedQueuePool', an asyncio "
            "pool, which the pool's synchronous engine cannot use.",
            f'Set {MAIN}["POOL_CLASS"] to "queue" (the default), "null" or a synchronous pool '
            'class such as "sqlalchemy.pool.StaticPool".',
        ),
        id="E006-asyncio-pool",
    ),
    # E007: the pool's numbers
    case(main_pool(POOL_SIZE=-1), e007_below(f'{MAIN}["POOL_SIZE"]', -1, 0), id="E007-negative"),
    case(
        main_pool(POOL_SIZE="10"),
        e007_int(f'{MAIN}["POOL_SIZE"]', "'10'", 0),
        id="E007-non-numeric",
    ),
    case(main_pool(POOL_SIZE=True), e007_int(f'{MAIN}["POOL_SIZE"]', "True", 0), id="E007-bool"),
    case(
        main_pool(MAX_OVERFLOW=2.5),
        e007_int(f'{MAIN}["MAX_OVERFLOW"]', "2.5", 0),
        id="E007-float-size",
    ),
    case(
        main_pool(POOL_RECYCLE=-2), e007_below(f'{MAIN}["POOL_RECYCLE"]', -2, -1), id="E007-recycle"
    ),
    case(
        main_pool(POOL_TIMEOUT=0),
        e007_positive(f'{MAIN}["POOL_TIMEOUT"]', 0, 30.0),
        id="E007-zero-timeout",
    ),
    case(
        main_pool(POOL_TIMEOUT="30"),
        e007_number(f'{MAIN}["POOL_TIMEOUT"]', "'30'", 30.0),
        id="E007-timeout-str",
    ),
    case(
        main_pool(POOL_TIMEOUT=False),
        e007_number(f'{MAIN}["POOL_TIMEOUT"]', "False", 30.0),
        id="E007-timeout-bool",
    ),
    case(
        main_pool(POOL_TIMEOUT=1e12),
        e007_above(f'{MAIN}["POOL_TIMEOUT"]', "1e+12"),
        id="E007-timeout-too-long",
    ),
    # E011: the pool's booleans
    case(
        main_pool(PRE_PING="yes"),
        e011(f'{MAIN}["PRE_PING"]', "'yes'", also="always"),
        id="E011-pre-ping",
    ),
    case(
        main_pool(PING_IDLE=-1),
        e007_positive(f'{MAIN}["PING_IDLE"]', -1, 1.0),
        id="E007-ping-idle-negative",
    ),
    case(
        main_pool(PING_IDLE="1s"),
        e007_number(f'{MAIN}["PING_IDLE"]', "'1s'", 1.0),
        id="E007-ping-idle-str",
    ),
    case(
        main_pool(MAX_WAITING=-1),
        e007_below(f'{MAIN}["MAX_WAITING"]', -1, 0),
        id="E007-max-waiting-negative",
    ),
    case(
        main_pool(MAX_WAITING=2.5),
        e007_int(f'{MAIN}["MAX_WAITING"]', "2.5", 0),
        id="E007-max-waiting-float",
    ),
    case(main_pool(USE_LIFO=1), e011(f'{MAIN}["USE_LIFO"]', "1"), id="E011-use-lifo"),
    case(main_pool(READ_ONLY="true"), e011(f'{MAIN}["READ_ONLY"]', "'true'"), id="E011-read-only"),
    case(
        main_pool(ECHO="verbose"), e011(f'{MAIN}["ECHO"]', "'verbose'", debug=True), id="E011-echo"
    ),
    case(
        main_pool(ECHO_POOL=None),
        e011(f'{MAIN}["ECHO_POOL"]', "None", debug=True),
        id="E011-echo-pool",
    ),
    # E012: isolation level
    case(
        main_pool(ISOLATION_LEVEL="SNAPSHOT"),
        E(
            12,
            f"{MAIN}[\"ISOLATION_LEVEL\"] is 'SNAPSHOT', not an isolation level.",
            f'Set {MAIN}["ISOLATION_LEVEL"] to None or one of AUTOCOMMIT, READ UNCOMMITTED, '
            "READ COMMITTED, REPEATABLE READ, SERIALIZABLE.",
        ),
        id="E012-name",
    ),
    case(
        main_pool(ISOLATION_LEVEL=4),
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
        main_pool(CONNECT_ARGS=["sslmode=require"]),
        E(
            13,
            f"{MAIN}[\"CONNECT_ARGS\"] must be a dict, not ['sslmode=require'].",
            f'Set {MAIN}["CONNECT_ARGS"] to a dict of DB-API connect() keyword arguments.',
        ),
        id="E013",
    ),
    # E007: SOCKET_TIMEOUT, a number of seconds of at least 5, or None
    case(
        main_pool(SOCKET_TIMEOUT=4),
        E(
            7,
            f'{MAIN}["SOCKET_TIMEOUT"] is 4, below the minimum of 5.',
            f'Set {MAIN}["SOCKET_TIMEOUT"] to 5 or more (seconds), or to None to leave dead '
            "connections to the operating system's TCP timeouts.",
        ),
        id="E007-socket-timeout-below-minimum",
    ),
    case(
        main_pool(SOCKET_TIMEOUT=0),
        e007_positive(f'{MAIN}["SOCKET_TIMEOUT"]', 0, 30.0),
        id="E007-socket-timeout-zero",
    ),
    case(
        main_pool(SOCKET_TIMEOUT="30"),
        e007_number(f'{MAIN}["SOCKET_TIMEOUT"]', "'30'", 30.0, none=True),
        id="E007-socket-timeout-str",
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
]


@pytest.mark.parametrize(("raw", "env", "kwargs", "expected"), POOL_CASES)
def test_problem(raw: Any, env: dict[str, str], kwargs: dict[str, Any], expected: Problem) -> None:
    """Each invalid setting gives exactly one problem: its stable id, message and hint."""
    config, problems = parse(raw, env, **kwargs)
    assert problems == [expected]
    assert config is None


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({}, (True, 1.0, 0)),
        ({"PRE_PING": "always", "PING_IDLE": 0, "MAX_WAITING": 16}, ("always", 0.0, 16)),
        ({"PRE_PING": False, "PING_IDLE": 0.25}, (False, 0.25, 0)),
    ],
)
def test_liveness_and_waiting_keys(values: dict[str, Any], expected: tuple[Any, ...]) -> None:
    """PRE_PING takes True, False or "always"; PING_IDLE 0 means ping every idle checkout."""
    config, problems = parse(main_pool(**values))
    assert problems == []
    assert config is not None
    main = config.pools["main"]
    assert (main.pre_ping, main.ping_idle, main.max_waiting) == expected


# -- edge cases of names and backends ------------------------------------------------


def test_non_string_database_hint_is_sensible() -> None:
    """A DATABASE that is not a string is reported without suggesting to add it to DATABASES."""
    _, problems = parse(main_pool(DATABASE=None))
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
