"""A pool behind PgBouncer: what ``PGBOUNCER`` changes, and the settings it refuses (E017-E019).

Every problem is asserted with its exact message and hint, since the system
checks and ``ConfigurationError`` show them to users word for word.
"""

from __future__ import annotations

from typing import Any

import pytest

from mingus_sessions._core.config import Problem
from tests.core.config_helpers import (
    MAIN,
    POSTGRESQL,
    SQLITE,
    E,
    case,
    config_of,
    e011,
    main_pool,
    parse,
)


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
        main_pool(
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
        main_pool(
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


# -- every PgBouncer problem, exactly ----------------------------------------------------

PGBOUNCER_CASES = [
    # E011: PGBOUNCER_PREPARED is a boolean
    case(
        main_pool(PGBOUNCER="transaction", PGBOUNCER_PREPARED="yes"),
        e011(f'{MAIN}["PGBOUNCER_PREPARED"]', "'yes'"),
        id="E011-pgbouncer-prepared",
    ),
    # E017: PGBOUNCER itself
    case(
        main_pool(PGBOUNCER="statement"),
        E(
            17,
            f"{MAIN}[\"PGBOUNCER\"] is 'statement', not a PgBouncer pool mode this pool can use.",
            f'Set {MAIN}["PGBOUNCER"] to "transaction" or "session" (PgBouncer\'s pool_mode for '
            "this database), or to None when the pool connects to PostgreSQL directly.",
        ),
        id="E017-mode",
    ),
    case(
        main_pool(PGBOUNCER=True),
        E(
            17,
            f'{MAIN}["PGBOUNCER"] is True, not a PgBouncer pool mode this pool can use.',
            f'Set {MAIN}["PGBOUNCER"] to "transaction" or "session" (PgBouncer\'s pool_mode for '
            "this database), or to None when the pool connects to PostgreSQL directly.",
        ),
        id="E017-bool",
    ),
    case(
        main_pool(PGBOUNCER="transaction"),
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
        main_pool(PGBOUNCER_PREPARED=True),
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
        main_pool(PGBOUNCER="transaction", CONNECT_ARGS={"prepare_threshold": 5}),
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
        main_pool(PGBOUNCER="transaction"),
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
        main_pool(PGBOUNCER="transaction", CONNECT_ARGS={"options": "-c search_path=app"}),
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
        main_pool(PGBOUNCER="transaction"),
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
        main_pool(PGBOUNCER="transaction", READ_ONLY=True, ISOLATION_LEVEL="autocommit"),
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
        main_pool(PGBOUNCER="transaction"),
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


@pytest.mark.parametrize(("raw", "env", "kwargs", "expected"), PGBOUNCER_CASES)
def test_problem(raw: Any, env: dict[str, str], kwargs: dict[str, Any], expected: Problem) -> None:
    """Each invalid setting gives exactly one problem: its stable id, message and hint."""
    config, problems = parse(raw, env, **kwargs)
    assert problems == [expected]
    assert config is None
