"""Turn a Django ``DATABASES`` entry and a pool's settings into engine arguments.

Plain functions from dicts to an :class:`EngineSpec`; no Django settings, no
connection. :mod:`mingus_sessions.engines` calls :func:`build_engine_spec` and
hands the result to ``sqlalchemy.create_engine``.

The rules, backend by backend (one module each: :mod:`.postgresql`,
:mod:`.sqlite`, :mod:`.mysql`, :mod:`.oracle`):

* the driver is the one Django itself uses (psycopg 3 when importable, else
  psycopg2; the stdlib ``sqlite3``; mysqlclient; python-oracledb);
* the URL is made with ``URL.create``, never by formatting strings, so
  passwords with ``@`` or ``/`` need no quoting and never reach a log line;
* Django's ``OPTIONS`` become ``connect_args``, except the keys only Django
  understands (``isolation_level``, ``assume_role``, ``pool``,
  ``server_side_binding``, SQLite's ``init_command`` and
  ``transaction_mode``), which are translated into their SQLAlchemy
  equivalents or dropped;
* a connect timeout is set unless the project chose one;
* on PostgreSQL, ``SOCKET_TIMEOUT`` becomes libpq's TCP keepalive and
  ``tcp_user_timeout`` parameters, and ``PGBOUNCER`` adapts the connection to
  the pooler (no prepared statements in transaction mode, read-only mode
  without a startup parameter).

The pool class and its keyword arguments are the same for every backend, and
are set here.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import URL
from sqlalchemy.pool import NullPool, Pool, QueuePool, StaticPool

from ..config import SUPPORTED_ENGINES, SUPPORTED_SUMMARY, PoolConfig
from ..errors import ConfigurationError
from ..liveness import liveness_check
from ..pools import CheckoutChecks, WaitAwareQueuePool
from .common import DEFAULT_CONNECT_TIMEOUT, VendorArgs, setting_key
from .mysql import mysql_args
from .oracle import oracle_args
from .postgresql import postgresql_args, postgresql_driver
from .sqlite import sqlite_args

__all__ = ["DEFAULT_CONNECT_TIMEOUT", "EngineSpec", "build_engine_spec", "postgresql_driver"]


@dataclass(frozen=True)
class EngineSpec:
    """Everything needed to build one pool's engine."""

    url: URL  # its repr hides the password
    # connect_args may carry credentials given through OPTIONS or CONNECT_ARGS.
    kwargs: dict[str, Any] = field(repr=False)
    backend: str
    #: SQL run once on every new DB-API connection (read-only mode, role, init command).
    on_connect: tuple[str, ...] = ()
    #: SQLite only: SQLAlchemy emits this instead of letting sqlite3 decide when to BEGIN.
    sqlite_begin: str | None = None
    #: PostgreSQL READ_ONLY: set the driver's read-only flag on every new connection,
    #: so that each transaction begins READ ONLY (this works through any pooler).
    driver_read_only: bool = False
    #: PostgreSQL only: the session time zone Django gives its own connections,
    #: set on each new connection whose server reports another one.
    time_zone: str | None = None

    @property
    def vendor(self) -> str:
        return self.backend.split("+", 1)[0]


def build_engine_spec(
    settings_dict: Mapping[str, Any],
    pool: PoolConfig,
    *,
    log_parameters: bool = False,
    pg_driver: str | None = None,
    time_zone: str | None = None,
) -> EngineSpec:
    """Build the URL and ``create_engine`` keyword arguments for ``pool``.

    ``settings_dict`` is the pool's ``DATABASES`` entry as Django's connection
    sees it (so ``NAME`` is the test database's while tests run). ``time_zone``
    is the time zone Django's connection to it runs in (its ``timezone_name``):
    PostgreSQL returns ``timestamptz`` values in the session's time zone, so
    the pool's connections use the same one.
    """
    vendor = _vendor(settings_dict, pool)
    if vendor == "postgresql":
        made = postgresql_args(settings_dict, pool, pg_driver)
    elif vendor == "sqlite":
        made = sqlite_args(settings_dict, pool)
    elif vendor == "mysql":
        made = mysql_args(settings_dict, pool)
    else:
        made = oracle_args(settings_dict, pool)
    postgresql = vendor == "postgresql"
    return EngineSpec(
        url=made.url,
        kwargs=_engine_kwargs(made, pool, vendor, log_parameters=log_parameters),
        backend=f"{vendor}+{made.driver}",
        on_connect=tuple(made.on_connect),
        sqlite_begin=made.sqlite_begin,
        driver_read_only=postgresql and pool.read_only,
        time_zone=time_zone if postgresql else None,
    )


def _vendor(settings_dict: Mapping[str, Any], pool: PoolConfig) -> str:
    engine = settings_dict.get("ENGINE", "")
    try:
        return SUPPORTED_ENGINES[engine]
    except KeyError:
        raise ConfigurationError(
            f'DATABASES["{pool.database}"]["ENGINE"] is {engine!r}: pool "{pool.name}" '
            f"cannot build a SQLAlchemy engine for it. {SUPPORTED_SUMMARY} [mingus_sessions.E014]",
            pool=pool.name,
        ) from None


def _engine_kwargs(
    made: VendorArgs, pool: PoolConfig, vendor: str, *, log_parameters: bool
) -> dict[str, Any]:
    """``create_engine``'s keyword arguments: logging, pre-ping, isolation, the pool's own."""
    kwargs: dict[str, Any] = {
        "pool_pre_ping": bool(pool.pre_ping),
        "pool_logging_name": pool.name,
        "logging_name": pool.name,
        "echo": pool.echo,
        "echo_pool": pool.echo_pool,
        # Bound parameters stay out of SQLAlchemy's own log lines and error texts.
        "hide_parameters": not log_parameters,
        "connect_args": made.connect_args,
    }
    if made.isolation:
        kwargs["isolation_level"] = made.isolation
    pool_class = made.pool_class or _pool_class(pool)
    kwargs["poolclass"] = pool_class
    if issubclass(pool_class, QueuePool):
        kwargs.update(
            pool_size=pool.pool_size,
            max_overflow=pool.max_overflow,
            pool_timeout=pool.timeout,
            pool_recycle=pool.recycle,
            pool_use_lifo=pool.use_lifo,
        )
        if issubclass(pool_class, WaitAwareQueuePool):
            # The pool checks liveness itself, cheaper than SQLAlchemy's ping.
            kwargs["pool_pre_ping"] = False
            kwargs["max_waiting"] = pool.max_waiting
            kwargs["checkout_checks"] = CheckoutChecks(
                pre_ping=pool.pre_ping,
                alive=liveness_check(f"{vendor}+{made.driver}", primary=not pool.read_only),
                ping_idle=pool.ping_idle,
            )
    elif pool_class is StaticPool and vendor == "sqlite":
        # Recycling the one connection of an in-memory database would empty it.
        kwargs["pool_recycle"] = -1
    elif pool_class is not NullPool:
        kwargs["pool_recycle"] = pool.recycle
    return kwargs


def _pool_class(pool: PoolConfig) -> type[Pool]:
    if pool.pool_class == "queue":
        return WaitAwareQueuePool
    if pool.pool_class == "null":
        return NullPool
    module_name, _, attr = pool.pool_class.rpartition(".")
    found = getattr(importlib.import_module(module_name), attr)
    if not (isinstance(found, type) and issubclass(found, Pool)):  # pragma: no cover - checked
        raise ConfigurationError(f"{setting_key(pool, 'POOL_CLASS')} is not a Pool subclass.")
    return found
