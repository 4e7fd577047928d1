"""The problems of the top-level keys, and how problems are reported, exactly.

Every problem id is asserted with its exact message and hint, since the system
checks and ``ConfigurationError`` show them to users word for word; the
other files of ``test_config_*`` hold the pools', the environment's and
PgBouncer's.
"""

from __future__ import annotations

from typing import Any

import pytest

from mingus_sessions._core.config import Problem
from tests.core.config_helpers import (
    POOLS,
    TOP_KEYS,
    E,
    case,
    config_of,
    e007_above,
    e007_below,
    e007_number,
    e007_positive,
    e011,
    parse,
)
from tests.core.test_config_environment import ENV_CASES
from tests.core.test_config_pgbouncer import PGBOUNCER_CASES
from tests.core.test_config_pools import POOL_CASES
from tests.core.test_config_replicas import REPLICA_CASES

TOP_CASES = [
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
            "The known keys are ENABLED, FAILURE_THRESHOLD, RECOVERY_TIMEOUT, SHARED; check the "
            "spelling.",
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
    # E007: numbers
    case(
        {"RETRY": {"BASE_DELAY": 1e12}},
        e007_above('MINGUS_SESSIONS["RETRY"]["BASE_DELAY"]', "1e+12"),
        id="E007-delay-too-long",
    ),
    case(
        {"LEAK_THRESHOLD": 86401},
        e007_above('MINGUS_SESSIONS["LEAK_THRESHOLD"]', "86401", none=True),
        id="E007-leak-threshold-too-long",
    ),
    case(
        {"SLOW_QUERY_THRESHOLD": 0},
        e007_positive('MINGUS_SESSIONS["SLOW_QUERY_THRESHOLD"]', 0, 1.0),
        id="E007-slow-query-zero",
    ),
    case(
        {"SLOW_QUERY_THRESHOLD": float("inf")},
        e007_number('MINGUS_SESSIONS["SLOW_QUERY_THRESHOLD"]', "inf", 1.0, none=True),
        id="E007-slow-query-inf",
    ),
    case(
        {"LEAK_THRESHOLD": "30"},
        e007_number('MINGUS_SESSIONS["LEAK_THRESHOLD"]', "'30'", 30.0, none=True),
        id="E007-leak-threshold",
    ),
    case(
        {"RETRY": {"MAX_RETRIES": -1}},
        e007_below('MINGUS_SESSIONS["RETRY"]["MAX_RETRIES"]', -1, 0),
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
        e007_below('MINGUS_SESSIONS["CIRCUIT_BREAKER"]["FAILURE_THRESHOLD"]', 0, 1),
        id="E007-failure-threshold",
    ),
    case(
        {"CIRCUIT_BREAKER": {"RECOVERY_TIMEOUT": -5}},
        e007_positive('MINGUS_SESSIONS["CIRCUIT_BREAKER"]["RECOVERY_TIMEOUT"]', -5, 60.0),
        id="E007-recovery-timeout",
    ),
    case(
        {"FLEET": {"INTERVAL": 0}},
        e007_positive('MINGUS_SESSIONS["FLEET"]["INTERVAL"]', 0, 10.0),
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
    # E011: booleans
    case({"MONITORING": "on"}, e011('MINGUS_SESSIONS["MONITORING"]', "'on'"), id="E011-monitoring"),
    case(
        {"LOG_QUERY_PARAMETERS": 1},
        e011('MINGUS_SESSIONS["LOG_QUERY_PARAMETERS"]', "1"),
        id="E011-log-query-parameters",
    ),
    case(
        {"RETRY": {"JITTER": "no"}},
        e011('MINGUS_SESSIONS["RETRY"]["JITTER"]', "'no'"),
        id="E011-jitter",
    ),
    case(
        {"CIRCUIT_BREAKER": {"SHARED": "yes"}},
        e011('MINGUS_SESSIONS["CIRCUIT_BREAKER"]["SHARED"]', "'yes'"),
        id="E011-breaker-shared",
    ),
    case(
        {"CIRCUIT_BREAKER": {"ENABLED": None}},
        e011('MINGUS_SESSIONS["CIRCUIT_BREAKER"]["ENABLED"]', "None"),
        id="E011-breaker",
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
    # E021: OpenTelemetry
    case(
        {"OPENTELEMETRY": "on"},
        E(
            21,
            "MINGUS_SESSIONS[\"OPENTELEMETRY\"] must be a dict or a boolean, not 'on'.",
            'Set MINGUS_SESSIONS["OPENTELEMETRY"] to {"METRICS": True, "TRACES": True} '
            "(either may be False), or to False to emit nothing through OpenTelemetry.",
        ),
        id="E021-not-a-dict",
    ),
    case(
        {"OPENTELEMETRY": {"METRICS": True, "SPANS": True}},
        E(
            21,
            'MINGUS_SESSIONS["OPENTELEMETRY"] has unknown keys: SPANS.',
            'Set MINGUS_SESSIONS["OPENTELEMETRY"] to {"METRICS": True, "TRACES": True} '
            "(either may be False), or to False to emit nothing through OpenTelemetry.",
        ),
        id="E021-unknown-key",
    ),
    case(
        {"OPENTELEMETRY": {"TRACES": "yes"}},
        E(
            21,
            'MINGUS_SESSIONS["OPENTELEMETRY"]["TRACES"] is \'yes\', not True or False.',
            'Set MINGUS_SESSIONS["OPENTELEMETRY"]["TRACES"] to True or False.',
        ),
        id="E021-not-a-boolean",
    ),
]


@pytest.mark.parametrize(("raw", "env", "kwargs", "expected"), TOP_CASES)
def test_problem(raw: Any, env: dict[str, str], kwargs: dict[str, Any], expected: Problem) -> None:
    """Each invalid setting gives exactly one problem: its stable id, message and hint."""
    config, problems = parse(raw, env, **kwargs)
    assert problems == [expected]
    assert config is None


def test_every_check_id_is_covered() -> None:
    """The cases of the five problem tables exercise every id from E001 to E021."""
    every_case = [*TOP_CASES, *POOL_CASES, *ENV_CASES, *PGBOUNCER_CASES, *REPLICA_CASES]
    covered = {param.values[-1].id for param in every_case}  # type: ignore[attr-defined]
    assert covered == {f"mingus_sessions.E{n:03d}" for n in range(1, 22)}


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
