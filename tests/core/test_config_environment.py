"""The environment variables that override ``MINGUS_SESSIONS``, and their problems (E010).

Every problem is asserted with its exact message and hint, since the system
checks and ``ConfigurationError`` show them to users word for word.
"""

from __future__ import annotations

from typing import Any

import pytest

from mingus_sessions._core.config import Problem, env_name
from tests.core.config_helpers import SEEDS, E, case, config_of, parse

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


# -- E010, exactly ---------------------------------------------------------------------


def _e010(var: str, raw: str, what: str, hint: str) -> Problem:
    return E(10, f"The environment variable {var}={raw!r} {what}.", hint)


_BOOL_HINT = "one of true, false, 1, 0, yes, no, on, off"

ENV_CASES = [
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
]


@pytest.mark.parametrize(("raw", "env", "kwargs", "expected"), ENV_CASES)
def test_problem(raw: Any, env: dict[str, str], kwargs: dict[str, Any], expected: Problem) -> None:
    """Each invalid setting gives exactly one problem: its stable id, message and hint."""
    config, problems = parse(raw, env, **kwargs)
    assert problems == [expected]
    assert config is None
