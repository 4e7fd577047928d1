"""Turn a Django ``DATABASES`` entry and a pool's settings into engine arguments.

Plain functions from dicts to an :class:`EngineSpec`; no Django settings, no
connection. :mod:`mingus_sessions.engines` calls :func:`build_engine_spec` and
hands the result to ``sqlalchemy.create_engine``.

The rules, backend by backend:

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
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from sqlalchemy import URL
from sqlalchemy.pool import NullPool, Pool, QueuePool, StaticPool

from .config import SUPPORTED_ENGINES, SUPPORTED_SUMMARY, PoolConfig
from .errors import ConfigurationError
from .pools import WaitAwareQueuePool

__all__ = ["DEFAULT_CONNECT_TIMEOUT", "EngineSpec", "build_engine_spec", "postgresql_driver"]

#: Seconds a new connection may take before the attempt fails (PostgreSQL, MySQL).
DEFAULT_CONNECT_TIMEOUT = 10

# psycopg 3's IsolationLevel values and psycopg2's ISOLATION_LEVEL_* constants
# differ; Django stores whichever its driver uses in OPTIONS["isolation_level"].
_PSYCOPG_LEVELS = {
    1: "READ UNCOMMITTED",
    2: "READ COMMITTED",
    3: "REPEATABLE READ",
    4: "SERIALIZABLE",
}
_PSYCOPG2_LEVELS = {
    0: "AUTOCOMMIT",
    1: "READ COMMITTED",
    2: "REPEATABLE READ",
    3: "SERIALIZABLE",
    4: "READ UNCOMMITTED",
}

# OPTIONS keys that Django's backends consume themselves.
_DJANGO_ONLY = {
    "postgresql": {"isolation_level", "assume_role", "pool", "server_side_binding"},
    "sqlite": {"init_command", "transaction_mode", "detect_types"},
    "mysql": {"isolation_level"},
    "oracle": {"threaded", "use_returning_into", "pool"},
}


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


def postgresql_driver() -> str:
    """The PostgreSQL driver Django would use: psycopg 3 if installed, else psycopg2."""
    return "psycopg" if importlib.util.find_spec("psycopg") is not None else "psycopg2"


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


def _isolation_from_django(value: Any, driver: str) -> str | None:
    if value is None:
        return None
    name = getattr(value, "name", None)
    if isinstance(name, str):  # psycopg's IsolationLevel enum
        return name.replace("_", " ")
    if isinstance(value, int):
        table = _PSYCOPG_LEVELS if driver == "psycopg" else _PSYCOPG2_LEVELS
        return table.get(value)
    return str(value).upper()


def _port(value: Any, pool: PoolConfig) -> int | None:
    if value in (None, ""):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ConfigurationError(
            f'DATABASES["{pool.database}"]["PORT"] is {value!r}, not a port number.',
            pool=pool.name,
        ) from None


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _socket_timeout_args(seconds: float) -> dict[str, int]:
    """libpq parameters under which a dead peer costs a socket at most ``seconds``.

    Three ways a connection meets a silent partition, each bounded:

    * data sent and never acknowledged (a statement or a pre-ping sent into
      the void): ``tcp_user_timeout`` drops the connection;
    * a statement acknowledged, its answer never coming: keepalive probes
      start after ``keepalives_idle`` and, with a user timeout set, Linux
      drops the connection at the first probe past ``tcp_user_timeout``
      (other systems after ``keepalives_count`` probes);
    * a connect attempt: ``connect_timeout``.

    A checkout whose pre-ping fails opens a new connection, so the user
    timeout and the connect timeout together stay within 80% of ``seconds``,
    less half a second for the retransmission timer's slack (about 0.4 s
    measured on Linux 6). A healthy server's kernel answers the probes, so a
    long statement is never cut.
    """
    budget = seconds * 0.8
    connect = min(DEFAULT_CONNECT_TIMEOUT, max(2, int(seconds // 3)))  # libpq's minimum is 2
    interval = max(1, int(seconds // 10))
    idle = max(1, int(seconds // 3))
    return {
        "keepalives": 1,
        "keepalives_idle": idle,
        "keepalives_interval": interval,
        "keepalives_count": max(1, int((budget - idle) // interval)),
        "tcp_user_timeout": int((budget - connect - 0.5) * 1000),
        "connect_timeout": connect,
    }


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
    options = dict(settings_dict.get("OPTIONS") or {})
    django_only = {k: options.pop(k) for k in list(options) if k in _DJANGO_ONLY[vendor]}
    isolation = pool.isolation_level
    on_connect: list[str] = []
    sqlite_begin: str | None = None
    pool_class: type[Pool] | None = None

    if vendor == "postgresql":
        driver = pg_driver or postgresql_driver()
        url = URL.create(
            f"postgresql+{driver}",
            username=settings_dict.get("USER") or None,
            password=settings_dict.get("PASSWORD") or None,
            host=settings_dict.get("HOST") or None,
            port=_port(settings_dict.get("PORT"), pool),
            database=settings_dict.get("NAME")
            or ("postgres" if "service" not in options else None),
        )
        if pool.socket_timeout is not None:
            # Key by key, so a keepalive parameter of the project's own wins.
            for key, value in _socket_timeout_args(pool.socket_timeout).items():
                options.setdefault(key, value)
        options.setdefault("connect_timeout", DEFAULT_CONNECT_TIMEOUT)
        # Names the backend in pg_stat_activity, so operators (and the fault
        # tests) can tell which pool a server process belongs to.
        options.setdefault("application_name", f"mingus_sessions:{pool.name}")
        isolation = isolation or _isolation_from_django(django_only.get("isolation_level"), driver)
        if django_only.get("assume_role"):
            on_connect.append(f"SET ROLE {_quote_ident(str(django_only['assume_role']))}")
        if pool.read_only and pool.pgbouncer == "session":
            # PgBouncer refuses the startup parameter below, but in session
            # mode this server session is ours until we disconnect (and
            # PgBouncer's DISCARD ALL resets it then).
            on_connect.append("SET default_transaction_read_only = on")
    elif vendor == "sqlite":
        driver = "pysqlite"
        name = str(settings_dict.get("NAME") or ":memory:")
        if name.startswith("file:"):
            path, _, query = name.partition("?")
            url = URL.create(
                "sqlite+pysqlite", database=path, query={**dict(parse_qsl(query)), "uri": "true"}
            )
        else:
            url = URL.create("sqlite+pysqlite", database=name)
        if name == ":memory:":
            # A plain in-memory database lives in one connection: every
            # session of this pool must share it, whatever the thread.
            pool_class = StaticPool
        # Pooled connections move between threads (one at a time); sqlite3's
        # same-thread guard would refuse that, Django's test database included.
        options["check_same_thread"] = False
        # Django turns foreign keys on for every SQLite connection; so must we,
        # or SQLAlchemy writes could break constraints the ORM enforces.
        on_connect.append("PRAGMA foreign_keys = ON")
        init_command = django_only.get("init_command")
        if init_command:
            on_connect.extend(s.strip() for s in str(init_command).split(";") if s.strip())
        mode = django_only.get("transaction_mode")
        if pool.read_only:
            on_connect.append("PRAGMA query_only = ON")
            # BEGIN IMMEDIATE takes a write lock, which a query-only connection refuses.
            sqlite_begin = "BEGIN"
        else:
            sqlite_begin = f"BEGIN {str(mode).upper()}" if mode else "BEGIN"
    elif vendor == "mysql":
        driver = "mysqldb"
        host = settings_dict.get("HOST") or None
        if host and str(host).startswith("/"):
            options.setdefault("unix_socket", host)
            host = "localhost"
        url = URL.create(
            "mysql+mysqldb",
            username=settings_dict.get("USER") or None,
            password=settings_dict.get("PASSWORD") or None,
            host=host,
            port=_port(settings_dict.get("PORT"), pool),
            database=settings_dict.get("NAME") or None,
        )
        options.setdefault("charset", "utf8mb4")
        options.setdefault("connect_timeout", DEFAULT_CONNECT_TIMEOUT)
        level = django_only.get("isolation_level")
        isolation = isolation or (str(level).upper() if level else None)
        if pool.read_only:
            on_connect.append("SET SESSION TRANSACTION READ ONLY")
    else:  # oracle
        driver = "oracledb"
        port = _port(settings_dict.get("PORT"), pool)
        service = settings_dict.get("NAME") or None
        if port:
            # As Django's oracle backend: makedsn(HOST or localhost, PORT, NAME as the SID).
            url = URL.create(
                "oracle+oracledb",
                username=settings_dict.get("USER") or None,
                password=settings_dict.get("PASSWORD") or None,
                host=(settings_dict.get("HOST") or "").strip() or "localhost",
                port=port,
                database=service,
            )
        else:  # NAME is a TNS alias or an Easy Connect string
            url = URL.create(
                "oracle+oracledb",
                username=settings_dict.get("USER") or None,
                password=settings_dict.get("PASSWORD") or None,
                host=service,
            )
        if pool.read_only:
            raise ConfigurationError(
                f"{_key(pool, 'READ_ONLY')} is not supported on Oracle, which has no "
                "session-wide read-only mode. Use a read-only database user instead.",
                pool=pool.name,
            )

    connect_args = {**options, **pool.connect_args}
    if vendor == "postgresql":
        _adapt_to_pgbouncer(connect_args, pool, driver)
        if pool.read_only and pool.pgbouncer is None and isolation == "AUTOCOMMIT":
            # In AUTOCOMMIT no transaction begins READ ONLY, so the session itself
            # must be read-only: a startup parameter, which PgBouncer would refuse
            # (E018 says so for a declared one). Any other READ_ONLY pool relies
            # on the driver's BEGIN READ ONLY alone and so also works through an
            # undeclared pooler. Added last, so CONNECT_ARGS["options"] cannot drop it.
            flag = "-c default_transaction_read_only=on"
            given = connect_args.get("options")
            connect_args["options"] = f"{given} {flag}" if given else flag
    kwargs: dict[str, Any] = {
        "pool_pre_ping": pool.pre_ping,
        "pool_logging_name": pool.name,
        "logging_name": pool.name,
        "echo": pool.echo,
        "echo_pool": pool.echo_pool,
        # Bound parameters stay out of SQLAlchemy's own log lines and error texts.
        "hide_parameters": not log_parameters,
        "connect_args": connect_args,
    }
    if isolation:
        kwargs["isolation_level"] = isolation

    if pool_class is None:
        pool_class = _pool_class(pool)
    kwargs["poolclass"] = pool_class
    if issubclass(pool_class, QueuePool):
        kwargs.update(
            pool_size=pool.pool_size,
            max_overflow=pool.max_overflow,
            pool_timeout=pool.timeout,
            pool_recycle=pool.recycle,
            pool_use_lifo=pool.use_lifo,
        )
    elif pool_class is StaticPool and vendor == "sqlite":
        # Recycling the one connection of an in-memory database would empty it.
        kwargs["pool_recycle"] = -1
    elif pool_class is not NullPool:
        kwargs["pool_recycle"] = pool.recycle

    return EngineSpec(
        url=url,
        kwargs=kwargs,
        backend=f"{vendor}+{driver}",
        on_connect=tuple(on_connect),
        sqlite_begin=sqlite_begin,
        driver_read_only=vendor == "postgresql" and pool.read_only,
        time_zone=time_zone if vendor == "postgresql" else None,
    )


def _adapt_to_pgbouncer(connect_args: dict[str, Any], pool: PoolConfig, driver: str) -> None:
    """Turn off what PgBouncer in transaction mode cannot carry from one transaction to the next.

    psycopg 3 prepares a statement on the server once it has run a few times;
    the next transaction may get another server connection, where that
    statement does not exist (or another client's of the same name does).
    psycopg2 never prepares statements.
    """
    if pool.pgbouncer == "transaction" and not pool.pgbouncer_prepared and driver == "psycopg":
        connect_args.setdefault("prepare_threshold", None)


def _key(pool: PoolConfig, key: str) -> str:
    return f'MINGUS_SESSIONS["POOLS"]["{pool.name}"]["{key}"]'


def _pool_class(pool: PoolConfig) -> type[Pool]:
    if pool.pool_class == "queue":
        return WaitAwareQueuePool
    if pool.pool_class == "null":
        return NullPool
    module_name, _, attr = pool.pool_class.rpartition(".")
    found = getattr(importlib.import_module(module_name), attr)
    if not (isinstance(found, type) and issubclass(found, Pool)):  # pragma: no cover - checked
        raise ConfigurationError(f"{_key(pool, 'POOL_CLASS')} is not a Pool subclass.")
    return found
