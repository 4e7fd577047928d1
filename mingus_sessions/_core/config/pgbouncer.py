"""A pool behind PgBouncer: ``PGBOUNCER``, ``PGBOUNCER_PREPARED``, what transaction mode forbids.

In transaction mode a client keeps a server connection for one transaction
only, so anything that lives in the server session (a prepared statement,
``SET``, a role, a cursor ``WITH HOLD``) is lost, or worse, reaches another
client. The checks here name the setting that would do that (E017-E019).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .readers import _Collector, _show
from .schema import PGBOUNCER_MODES, SUPPORTED_ENGINES, PoolConfig, key_path


def _pgbouncer_mode(
    name: str, values: Mapping[str, Any], databases: Mapping[str, str], out: _Collector
) -> str | None:
    """``PGBOUNCER``: None or PgBouncer's pool mode, on a PostgreSQL database only."""
    where = key_path("POOLS", name, "PGBOUNCER")
    mode = values["PGBOUNCER"]
    if mode is None:
        return None
    if mode not in PGBOUNCER_MODES:
        out.add(
            17,
            f"{where} is {_show(mode)}, not a PgBouncer pool mode this pool can use.",
            f'Set {where} to "transaction" or "session" (PgBouncer\'s pool_mode for this '
            "database), or to None when the pool connects to PostgreSQL directly.",
        )
        return None
    database = values["DATABASE"]
    engine = databases.get(database) if isinstance(database, str) else None
    vendor = SUPPORTED_ENGINES.get(engine) if engine is not None else None
    if vendor is not None and vendor != "postgresql":
        out.add(
            17,
            f'{where} is "{mode}", but the pool\'s database DATABASES["{database}"] is not '
            "PostgreSQL: PgBouncer only fronts PostgreSQL.",
            f"Remove {where}, or set {key_path('POOLS', name, 'DATABASE')} to a PostgreSQL "
            "database.",
        )
        return None
    return str(mode)


def _check_pgbouncer_prepared(pool: PoolConfig, out: _Collector) -> None:
    """``PGBOUNCER_PREPARED`` only means something with PgBouncer in transaction mode."""
    if pool.pgbouncer_prepared and pool.pgbouncer != "transaction":
        out.add(
            17,
            f"{_at(pool, 'PGBOUNCER_PREPARED')} is True, but {_at(pool, 'PGBOUNCER')} is "
            f"{_show(pool.pgbouncer)}: it only applies to PgBouncer in transaction mode.",
            f'Set {_at(pool, "PGBOUNCER")} to "transaction" if the pool goes through PgBouncer '
            f"in transaction mode, or remove {_at(pool, 'PGBOUNCER_PREPARED')}.",
        )


def _check_transaction_pooling(
    pool: PoolConfig, entry: Mapping[str, Any] | None, out: _Collector
) -> None:
    """Report the settings that break once PgBouncer hands each transaction another server.

    ``entry`` is the pool's ``DATABASES`` entry when known; its ``OPTIONS`` are
    the driver's arguments that ``CONNECT_ARGS`` does not override.
    """
    options = entry.get("OPTIONS") if entry is not None else None
    options = options if isinstance(options, Mapping) else {}
    _check_prepared_statements(pool, options, out)
    _check_startup_options(pool, options, out)
    _check_session_state(pool, options, out)
    if entry is not None and entry.get("DISABLE_SERVER_SIDE_CURSORS") is not True:
        alias = _alias(pool)
        out.add(
            19,
            f'{alias}["DISABLE_SERVER_SIDE_CURSORS"] is not True, but {_mode(pool)} on that '
            "database: the Django ORM's server-side cursors (QuerySet.iterator()) are "
            "declared WITH HOLD and fail under transaction pooling.",
            f'Set {alias}["DISABLE_SERVER_SIDE_CURSORS"] = True, as Django\'s documentation '
            "asks for transaction pooling.",
        )


def _check_prepared_statements(
    pool: PoolConfig, options: Mapping[str, Any], out: _Collector
) -> None:
    """A ``prepare_threshold`` unless PgBouncer tracks prepared statements (E018)."""
    threshold = _driver_argument(pool, options, "prepare_threshold")
    if threshold is not None and threshold[1] is not None and not pool.pgbouncer_prepared:
        out.add(
            18,
            f"{threshold[0]} is {_show(threshold[1])}, but {_mode(pool)}: the driver's prepared "
            "statements live in one server session and fail on the next one PgBouncer hands "
            "out.",
            f"Remove {threshold[0]} (the pool turns prepared statements off), or set "
            f"{_at(pool, 'PGBOUNCER_PREPARED')} to True if PgBouncer (1.21 or later) tracks "
            "them (max_prepared_statements).",
        )


def _check_startup_options(pool: PoolConfig, options: Mapping[str, Any], out: _Collector) -> None:
    """libpq's startup parameter ``options``, which PgBouncer refuses or drops (E018)."""
    startup = _driver_argument(pool, options, "options")
    if startup is not None and startup[1]:
        out.add(
            18,
            f'{startup[0]} sends the startup parameter "options", but {_mode(pool)}: PgBouncer '
            'refuses it ("unsupported startup parameter") or, with ignore_startup_parameters, '
            "drops it silently.",
            "Set those parameters on the server instead (ALTER ROLE ... SET, ALTER DATABASE "
            "... SET), or per transaction with SET LOCAL.",
        )


def _check_session_state(pool: PoolConfig, options: Mapping[str, Any], out: _Collector) -> None:
    """A role or a read-only session that would outlive the transaction (E018)."""
    alias = _alias(pool)
    if options.get("assume_role"):
        out.add(
            18,
            f'{alias}["OPTIONS"]["assume_role"] runs SET ROLE on each new connection, but '
            f"{_mode(pool)}: the role would reach other clients' transactions, and be missing "
            "from this pool's.",
            f'Connect as that role ({alias}["USER"]), or set {_at(pool, "PGBOUNCER")} to '
            '"session" if PgBouncer runs this database in session mode.',
        )
    if pool.read_only and pool.isolation_level == "AUTOCOMMIT":
        out.add(
            18,
            f'{_at(pool, "READ_ONLY")} is True with {_at(pool, "ISOLATION_LEVEL")} "AUTOCOMMIT", '
            f"but {_mode(pool)}: statements run outside any transaction, and a session-wide "
            "read-only setting would reach other clients.",
            f"Remove {_at(pool, 'ISOLATION_LEVEL')} from this pool, or connect with a role that "
            "may only read.",
        )


def _driver_argument(
    pool: PoolConfig, options: Mapping[str, Any], key: str
) -> tuple[str, Any] | None:
    """Where the driver argument ``key`` is set (CONNECT_ARGS wins over OPTIONS), and its value."""
    if key in pool.connect_args:
        return f'{_at(pool, "CONNECT_ARGS")}["{key}"]', pool.connect_args[key]
    if key in options:
        return f'{_alias(pool)}["OPTIONS"]["{key}"]', options[key]
    return None


def _at(pool: PoolConfig, key: str) -> str:
    """The settings path of the pool's ``key``."""
    return key_path("POOLS", pool.name, key)


def _alias(pool: PoolConfig) -> str:
    """The pool's ``DATABASES`` entry, as a settings path."""
    return f'DATABASES["{pool.database}"]'


def _mode(pool: PoolConfig) -> str:
    """The clause that names the cause of every transaction-pooling problem."""
    return f'{_at(pool, "PGBOUNCER")} is "transaction"'
