"""The async twin of a pool's :class:`~.EngineSpec`: the same database through an async driver.

Plain functions. An async engine is built from the spec its sync engine was
built from, so both follow the same ``DATABASES`` entry and pool settings;
only the driver and the pool class change:

* PostgreSQL: psycopg 3's async connection (``postgresql+psycopg_async``),
  whichever driver the sync engine uses;
* SQLite: ``sqlite+aiosqlite`` (the stdlib module in a thread of its own);
* MySQL and MariaDB: ``mysql+aiomysql``, whose connect arguments are a subset
  of mysqlclient's (the others are dropped, with their names in the log).

The queue pool becomes its asyncio twin, with the same fair hand-off and
liveness check; ``NullPool`` and ``StaticPool`` serve both worlds as they are.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import replace
from typing import Any

from sqlalchemy.pool import NullPool, Pool, StaticPool

from ..config import PoolConfig
from ..errors import ConfigurationError
from ..liveness import liveness_check
from ..pools import CheckoutChecks, WaitAwareAsyncQueuePool, WaitAwareQueuePool
from . import EngineSpec

__all__ = ["ASYNC_DRIVERS", "async_engine_spec"]

logger = logging.getLogger("mingus_sessions")

#: Per vendor: the async driver's SQLAlchemy name and the module it needs.
ASYNC_DRIVERS = {
    "postgresql": ("psycopg_async", "psycopg"),
    "sqlite": ("aiosqlite", "aiosqlite"),
    "mysql": ("aiomysql", "aiomysql"),
}

#: mysqlclient connect arguments that aiomysql also takes (the rest are dropped).
_AIOMYSQL_ARGS = frozenset(
    {
        "unix_socket",
        "charset",
        "sql_mode",
        "read_default_file",
        "conv",
        "use_unicode",
        "client_flag",
        "init_command",
        "connect_timeout",
        "ssl",
        "auth_plugin",
        "program_name",
        "server_public_key",
        "local_infile",
        "autocommit",
    }
)


def async_engine_spec(spec: EngineSpec, pool: PoolConfig) -> EngineSpec:
    """``spec`` with the vendor's async driver and the async form of its pool class."""
    pool_name = pool.name
    vendor = spec.vendor
    if vendor not in ASYNC_DRIVERS:
        raise ConfigurationError(
            f'Pool "{pool_name}" is on {vendor}, which has no async driver here: '
            f"async sessions support {', '.join(sorted(ASYNC_DRIVERS))}.",
            pool=pool_name,
        )
    driver, module = ASYNC_DRIVERS[vendor]
    if importlib.util.find_spec(module) is None or importlib.util.find_spec("greenlet") is None:
        raise ConfigurationError(
            f'Pool "{pool_name}" needs the async driver {module} (and greenlet) for async '
            'sessions: pip install "mingus-sessions[async]".',
            pool=pool_name,
        )
    kwargs = dict(spec.kwargs)
    kwargs["poolclass"] = _async_pool_class(kwargs["poolclass"], pool_name)
    if vendor == "mysql":
        kwargs["connect_args"] = _aiomysql_args(kwargs["connect_args"], pool_name)
    checks = kwargs.get("checkout_checks")
    if isinstance(checks, CheckoutChecks):
        # The async driver's own check (or None: ping), for a primary unless READ_ONLY.
        alive = liveness_check(f"{vendor}+{driver}", primary=not pool.read_only)
        kwargs["checkout_checks"] = replace(checks, alive=alive)
    return replace(
        spec,
        url=spec.url.set(drivername=f"{vendor}+{driver}"),
        kwargs=kwargs,
        backend=f"{vendor}+{driver}",
    )


def _async_pool_class(pool_class: type[Pool], pool_name: str) -> type[Pool]:
    if issubclass(pool_class, WaitAwareQueuePool):
        return WaitAwareAsyncQueuePool
    if pool_class in (NullPool, StaticPool) or getattr(pool_class, "_is_asyncio", False):
        return pool_class
    raise ConfigurationError(
        f'Pool "{pool_name}" uses {pool_class.__qualname__}, which cannot serve async '
        'sessions: set its POOL_CLASS to "queue", "null" or an asyncio pool class.',
        pool=pool_name,
    )


def _aiomysql_args(connect_args: dict[str, Any], pool_name: str) -> dict[str, Any]:
    kept = {key: value for key, value in connect_args.items() if key in _AIOMYSQL_ARGS}
    dropped = sorted(set(connect_args) - set(kept))
    if dropped:
        logger.info(
            "Async engine of pool %s: aiomysql takes no %s; left out", pool_name, ", ".join(dropped)
        )
    return kept
