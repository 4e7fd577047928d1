"""Read replicas: ``REPLICAS`` and ``MAX_REPLICA_LAG`` (E020, E007), and the pools they make.

Each replica becomes a read-only pool named ``"<pool>@<alias>"`` with its
primary's settings; every problem is asserted with its exact message and hint.
"""

from __future__ import annotations

from typing import Any

import pytest

from mingus_sessions._core.config import Problem
from tests.core.config_helpers import MAIN, E, case, config_of, e007_positive, main_pool, parse

POSTGRESQL = "django.db.backends.postgresql"
SQLITE = "django.db.backends.sqlite3"
DATABASES = {"default": POSTGRESQL, "r1": POSTGRESQL, "r2": POSTGRESQL, "lite": SQLITE}
LISTED = "List the DATABASES aliases of the pool's replicas."


def test_each_replica_becomes_a_read_only_pool_with_its_primarys_settings() -> None:
    config = config_of(
        main_pool(REPLICAS=["r1", "r2"], MAX_REPLICA_LAG=2.5, POOL_SIZE=7, SOCKET_TIMEOUT=10),
        databases=DATABASES,
    )
    assert list(config.pools) == ["main", "main@r1", "main@r2"]
    main = config.pools["main"]
    assert (main.replicas, main.max_replica_lag, main.replica_of) == (
        ("main@r1", "main@r2"),
        2.5,
        None,
    )
    replica = config.pools["main@r1"]
    assert (replica.database, replica.read_only, replica.replicas, replica.replica_of) == (
        "r1",
        True,
        (),
        "main",
    )
    assert (replica.pool_size, replica.socket_timeout, replica.max_replica_lag) == (7, 10, 2.5)


def test_without_replicas_nothing_changes() -> None:
    config = config_of(main_pool(), databases=DATABASES)
    assert list(config.pools) == ["main"]
    assert (config.pools["main"].replicas, config.pools["main"].max_replica_lag) == ((), 5.0)


REPLICA_CASES = [
    case(
        main_pool(REPLICAS="r1"),
        E(
            20,
            f"{MAIN}[\"REPLICAS\"] must be a list of DATABASES aliases, not 'r1'.",
            f'Set {MAIN}["REPLICAS"] to a list such as ["replica"], or [] for no replicas.',
        ),
        databases=DATABASES,
        id="E020-string",
    ),
    case(
        main_pool(REPLICAS=["r9"]),
        E(
            20,
            f"{MAIN}[\"REPLICAS\"] names 'r9', which is not in DATABASES "
            "(known: default, lite, r1, r2).",
            LISTED,
        ),
        databases=DATABASES,
        id="E020-unknown",
    ),
    case(
        main_pool(REPLICAS=["default"]),
        E(
            20,
            f'{MAIN}["REPLICAS"] names "default", the pool\'s own DATABASE.',
            "List only the replicas; the pool's DATABASE is its primary.",
        ),
        databases=DATABASES,
        id="E020-own-database",
    ),
    case(
        main_pool(REPLICAS=["r1", "r1"]),
        E(20, f'{MAIN}["REPLICAS"] names "r1" twice.', "List each replica once."),
        databases=DATABASES,
        id="E020-twice",
    ),
    case(
        main_pool(REPLICAS=["lite"]),
        E(
            20,
            f'{MAIN}["REPLICAS"] names "lite", whose ENGINE \'{SQLITE}\' is not PostgreSQL.',
            "Replicas are PostgreSQL streaming standbys; list only those.",
        ),
        databases=DATABASES,
        id="E020-replica-not-postgresql",
    ),
    case(
        {"POOLS": {"main": {"DATABASE": "lite", "REPLICAS": ["r1"]}}},
        E(
            20,
            f"{MAIN}[\"REPLICAS\"] is set, but the pool's database DATABASES['lite'] is not "
            "PostgreSQL: routing to replicas follows PostgreSQL's WAL positions.",
            f'Remove {MAIN}["REPLICAS"], or point a pool of its own at each replica.',
        ),
        databases=DATABASES,
        id="E020-primary-not-postgresql",
    ),
    case(
        {
            "POOLS": {
                "main": {"DATABASE": "default", "REPLICAS": ["r1"]},
                "main@r1": {"DATABASE": "r1"},
            }
        },
        E(
            20,
            f'{MAIN}["REPLICAS"] makes a pool "main@r1" for its replica, but '
            'MINGUS_SESSIONS["POOLS"]["main@r1"] exists already.',
            'Rename the pool "main@r1": "<pool>@<alias>" names a replica\'s pool.',
        ),
        databases=DATABASES,
        id="E020-name-taken",
    ),
    case(
        main_pool(REPLICAS=["r1"], MAX_REPLICA_LAG=0),
        e007_positive(f'{MAIN}["MAX_REPLICA_LAG"]', 0, 5.0),
        databases=DATABASES,
        id="E007-max-replica-lag-zero",
    ),
]


@pytest.mark.parametrize(("raw", "env", "kwargs", "expected"), REPLICA_CASES)
def test_problem(raw: Any, env: dict[str, str], kwargs: dict[str, Any], expected: Problem) -> None:
    config, problems = parse(raw, env, **kwargs)
    assert problems == [expected]
    assert config is None
