"""The ``POOLS`` section: each named pool, read into a :class:`PoolConfig`.

One pool is read in the order its problems are reported: the dict and its
keys (with the environment's overrides), the database and its backend,
PgBouncer's mode, the pool class, the isolation level, the driver's connect
arguments, the numbers and flags, and last the rules PgBouncer adds.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from .environment import _env_overrides
from .pgbouncer import _check_pgbouncer_prepared, _check_transaction_pooling, _pgbouncer_mode
from .readers import _Collector, _show
from .replicas import _expand_replicas, _replica_aliases, _replica_pools
from .schema import (
    BUILTIN_POOL_CLASSES,
    ISOLATION_LEVELS,
    MIN_SOCKET_TIMEOUT,
    POOL_DEFAULTS,
    SUPPORTED_ENGINES,
    SUPPORTED_SUMMARY,
    PoolConfig,
    key_path,
)


def _parse_pools(
    pools_given: Any,
    environ: Mapping[str, str],
    databases: Mapping[str, str],
    out: _Collector,
    database_settings: Mapping[str, Any] | None,
) -> tuple[Mapping[str, Any], dict[str, PoolConfig]]:
    """``POOLS``: the dict as given (``{}`` when unusable) and the pools that parsed."""
    pools: dict[str, PoolConfig] = {}
    if not isinstance(pools_given, Mapping) or not pools_given:
        out.add(
            3,
            f"{key_path('POOLS')} must be a non-empty dict of pools, not {_show(pools_given)}.",
            f"Define at least one pool, e.g. {key_path('POOLS')} = "
            '{"main": {"DATABASE": "default"}}.',
        )
        return {}, pools
    for name, given in pools_given.items():
        if not isinstance(name, str) or not name:
            out.add(
                3,
                f"{key_path('POOLS')} has a pool named {_show(name)}; names must be "
                "non-empty strings.",
                'Rename the pool, e.g. "main" or "analytics".',
            )
            continue
        parsed = _parse_pool(name, given, environ, databases, out, database_settings)
        if parsed is not None:
            pools[name] = parsed
    _expand_replicas(pools, out)
    return pools_given, pools


def _parse_pool(
    name: str,
    given: Any,
    environ: Mapping[str, str],
    databases: Mapping[str, str],
    out: _Collector,
    database_settings: Mapping[str, Any] | None = None,
) -> PoolConfig | None:
    """One pool's settings over the defaults and the environment, or None if not a dict."""
    values = _pool_values(name, given, environ, out)
    if values is None:
        return None
    _check_database(name, values["DATABASE"], databases, out)
    pgbouncer = _pgbouncer_mode(name, values, databases, out)
    if pgbouncer == "transaction" and "POOL_CLASS" not in given:
        # PgBouncer pools the server connections; a second pool in front of it
        # would only hold PgBouncer's client slots idle.
        values["POOL_CLASS"] = "null"
    replicas = _replica_aliases(name, values, databases, out)
    pool = _build_pool(name, values, pgbouncer, out, replicas)
    _check_pgbouncer_prepared(pool, out)
    if pgbouncer == "transaction":
        entry = (database_settings or {}).get(pool.database)
        _check_transaction_pooling(pool, entry if isinstance(entry, Mapping) else None, out)
    return pool


def _pool_values(
    name: str, given: Any, environ: Mapping[str, str], out: _Collector
) -> dict[str, Any] | None:
    """The pool's known keys merged over ``POOL_DEFAULTS``, then the environment's overrides."""
    where = key_path("POOLS", name)
    if not isinstance(given, Mapping):
        out.add(
            3,
            f"{where} must be a dict of pool settings, not {_show(given)}.",
            f'Use a dict such as {{"DATABASE": "default", "POOL_SIZE": 5}} for {where}.',
        )
        return None
    unknown = sorted(set(given) - set(POOL_DEFAULTS), key=str)
    if unknown:
        out.add(
            4,
            f"{where} has unknown keys: {', '.join(map(str, unknown))}.",
            f"The pool keys are {', '.join(POOL_DEFAULTS)}; check the spelling.",
        )
    values = {**POOL_DEFAULTS, **{k: v for k, v in given.items() if k in POOL_DEFAULTS}}
    values.update(_env_overrides(name, environ, out))
    return values


def _check_database(
    name: str, database: Any, databases: Mapping[str, str], out: _Collector
) -> None:
    """``DATABASE``: an alias of ``DATABASES`` whose backend this package can build for."""
    where = key_path("POOLS", name, "DATABASE")
    if not isinstance(database, str) or database not in databases:
        known = ", ".join(sorted(databases)) or "none"
        out.add(
            5,
            f"{where} names {_show(database)}, which is not in DATABASES (known: {known}).",
            f"Set {where} to one of the aliases in DATABASES"
            + (f', or add "{database}" to DATABASES.' if isinstance(database, str) else "."),
        )
    elif databases[database] not in SUPPORTED_ENGINES:
        out.add(
            14,
            f'DATABASES["{database}"]["ENGINE"] is {databases[database]!r}: pool "{name}" '
            f"({where}) cannot build a SQLAlchemy engine for it.",
            SUPPORTED_SUMMARY,
        )


def _build_pool(
    name: str,
    values: Mapping[str, Any],
    pgbouncer: str | None,
    out: _Collector,
    replicas: tuple[str, ...] = (),
) -> PoolConfig:
    """The :class:`PoolConfig` of the merged values, each read by its kind."""

    def at(key: str) -> str:
        return key_path("POOLS", name, key)

    database = values["DATABASE"]
    pool_class = _pool_class(values["POOL_CLASS"], at("POOL_CLASS"), out)
    isolation = _isolation_level(values["ISOLATION_LEVEL"], at("ISOLATION_LEVEL"), out)
    connect_args = _connect_args(values["CONNECT_ARGS"], at("CONNECT_ARGS"), out)
    recycle = values["POOL_RECYCLE"]
    return PoolConfig(
        name=name,
        database=database if isinstance(database, str) else "default",
        pool_class=pool_class,
        pool_size=out.integer(values["POOL_SIZE"], at("POOL_SIZE"), minimum=0, default=5),
        max_overflow=out.integer(values["MAX_OVERFLOW"], at("MAX_OVERFLOW"), minimum=0, default=10),
        recycle=-1
        if recycle is None
        else out.integer(recycle, at("POOL_RECYCLE"), minimum=-1, default=1800),
        timeout=out.number(values["POOL_TIMEOUT"], at("POOL_TIMEOUT"), default=30.0) or 30.0,
        max_waiting=out.integer(values["MAX_WAITING"], at("MAX_WAITING"), minimum=0, default=0),
        pre_ping=out.boolean(values["PRE_PING"], at("PRE_PING"), also="always"),
        ping_idle=_ping_idle(values["PING_IDLE"], at("PING_IDLE"), out),
        use_lifo=bool(out.boolean(values["USE_LIFO"], at("USE_LIFO"))),
        echo=out.boolean(values["ECHO"], at("ECHO"), allow_debug=True),
        echo_pool=out.boolean(values["ECHO_POOL"], at("ECHO_POOL"), allow_debug=True),
        read_only=bool(out.boolean(values["READ_ONLY"], at("READ_ONLY"))),
        isolation_level=isolation,
        connect_args=MappingProxyType(dict(connect_args)),
        socket_timeout=_socket_timeout(values["SOCKET_TIMEOUT"], at("SOCKET_TIMEOUT"), out),
        pgbouncer=pgbouncer,
        pgbouncer_prepared=bool(
            out.boolean(values["PGBOUNCER_PREPARED"], at("PGBOUNCER_PREPARED"))
        ),
        replicas=_replica_pools(name, replicas),
        max_replica_lag=out.number(values["MAX_REPLICA_LAG"], at("MAX_REPLICA_LAG"), default=5.0)
        or 5.0,
    )


def _ping_idle(value: Any, where: str, out: _Collector) -> float:
    """``PING_IDLE``: seconds of idleness past which a checkout pings (0: always ping)."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value == 0:
        return 0.0
    return out.number(value, where, default=1.0) or 1.0


def _pool_class(pool_class: Any, where: str, out: _Collector) -> str:
    """``POOL_CLASS``: "queue", "null" or the path of a synchronous Pool subclass."""
    found_class = (
        _import_pool_class(pool_class)
        if isinstance(pool_class, str) and pool_class not in BUILTIN_POOL_CLASSES
        else None
    )
    if not isinstance(pool_class, str) or (
        pool_class not in BUILTIN_POOL_CLASSES and found_class is None
    ):
        out.add(
            6,
            f'{where} is {_show(pool_class)}, which is neither "queue", '
            '"null" nor the dotted path of a sqlalchemy.pool.Pool subclass.',
            f'Set {where} to "queue" (the default), "null" (for PgBouncer in '
            'transaction mode) or a path such as "sqlalchemy.pool.StaticPool".',
        )
        return "queue"
    if getattr(found_class, "_is_asyncio", False):
        # create_engine would refuse it with an ArgumentError only when the
        # engine is first built, far from the setting.
        out.add(
            6,
            f"{where} is {_show(pool_class)}, an asyncio pool, which the pool's "
            "synchronous engine cannot use.",
            f'Set {where} to "queue" (the default), "null" or a synchronous pool '
            'class such as "sqlalchemy.pool.StaticPool".',
        )
        return "queue"
    return pool_class


def _import_pool_class(path: str) -> type | None:
    """The ``sqlalchemy.pool.Pool`` subclass at the dotted ``path``, or None."""
    from sqlalchemy.pool import Pool

    module_name, _, attr = path.rpartition(".")
    if not module_name:
        return None
    try:
        found = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError):
        return None
    return found if isinstance(found, type) and issubclass(found, Pool) else None


def _isolation_level(isolation: Any, where: str, out: _Collector) -> str | None:
    """``ISOLATION_LEVEL``: None or one of ``ISOLATION_LEVELS``, upper-cased."""
    if isolation is None:
        return None
    if not isinstance(isolation, str) or isolation.upper() not in ISOLATION_LEVELS:
        out.add(
            12,
            f"{where} is {_show(isolation)}, not an isolation level.",
            f"Set {where} to None or one of {', '.join(ISOLATION_LEVELS)}.",
        )
        return None
    return isolation.upper()


def _connect_args(connect_args: Any, where: str, out: _Collector) -> Mapping[str, Any]:
    """``CONNECT_ARGS``: a dict of keyword arguments for the driver's ``connect()``."""
    if not isinstance(connect_args, Mapping):
        out.add(
            13,
            f"{where} must be a dict, not {_show(connect_args)}.",
            f"Set {where} to a dict of DB-API connect() keyword arguments.",
        )
        return {}
    return connect_args


def _socket_timeout(value: Any, where: str, out: _Collector) -> float | None:
    """``SOCKET_TIMEOUT``: None (off) or a number of seconds of at least the minimum."""
    seconds = out.number(value, where, allow_none=True, default=30.0)
    if seconds is not None and seconds < MIN_SOCKET_TIMEOUT:
        out.add(
            7,
            f"{where} is {value}, below the minimum of {MIN_SOCKET_TIMEOUT}.",
            f"Set {where} to {MIN_SOCKET_TIMEOUT} or more (seconds), or to None to leave dead "
            "connections to the operating system's TCP timeouts.",
        )
        return 30.0
    return seconds
