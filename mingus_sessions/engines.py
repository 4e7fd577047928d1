"""One engine per pool per process, built lazily from ``DATABASES``.

The registry builds each pool's engine on first use from the live
``settings_dict`` of its database alias, so engines follow the test database
that Django's test runner creates; if that ``NAME`` changes later, the engine is
rebuilt. Engines are fork-safe with no user action: after ``os.fork()`` the
child drops the parent's pooled connections (without closing them, which
would end the parent's sessions) and opens its own.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine.base import OptionEngine
from sqlalchemy.engine.interfaces import ExceptionContext
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import Pool, PoolProxiedConnection

from . import conf
from ._core.config import Config, PoolConfig, key_path
from ._core.engine_args import EngineSpec, build_engine_spec
from ._core.errors import ConfigurationError, TransactionTimeoutError
from ._core.pools import PoolProbe, WaitAwareQueuePool
from ._core.recorder import PoolRecorder
from ._core.translate import classify, connect_option_error, summary

__all__ = ["PoolEntry", "dispose_engines", "get_engine", "get_entry", "pool_names"]

logger = logging.getLogger("mingus_sessions")


@dataclass(eq=False)
class PoolEntry:
    """What the registry keeps per pool: the engine and what it was built from."""

    name: str
    config: PoolConfig
    spec: EngineSpec
    engine: Engine
    sessionmaker: sessionmaker[Session]
    probe: PoolProbe
    # Never in the repr: the DATABASES entry holds the password.
    settings_dict: dict[str, Any] = field(repr=False)
    built_for: Any = field(repr=False)  # the settings_dict NAME the engine was built with
    #: Whether sessions record where they were opened (for leak reports).
    track_sites: bool = False

    @property
    def stale(self) -> bool:
        return bool(self.settings_dict.get("NAME") != self.built_for)


_lock = threading.RLock()
_entries: dict[str, PoolEntry] = {}
#: Connections whose transaction PostgreSQL aborted after a statement error.
aborted_connections: weakref.WeakSet[Any] = weakref.WeakSet()
# Pools a forked child stopped using: kept referenced so that their DB-API
# connections are never garbage-collected (and closed) in the child.
_orphaned_pools: list[Pool] = []
# Set by the pytest plugin (mingus_sessions.testing) while it is active: called
# with a pool's DATABASES alias before the pool is asked for a connection, it
# raises when the running test may not use that database. None in production,
# where engines are built without the wrapper that calls it.
_connect_guard: Callable[[str], None] | None = None


def pool_names() -> tuple[str, ...]:
    """The configured pool names, default pool first."""
    config = conf.get_config()
    return (config.default_pool, *(n for n in config.pools if n != config.default_pool))


def get_entry(pool: str | None = None) -> PoolEntry:
    """The registry entry of ``pool`` (the default pool for ``None``), built if needed."""
    entry = _entries.get(pool) if pool is not None else None
    if entry is not None and not entry.stale:
        return entry
    config = conf.get_config()
    name = config.default_pool if pool is None else pool
    entry = _entries.get(name)
    if entry is not None and not entry.stale:
        return entry
    return _build(name)


def get_engine(pool: str | None = None) -> Engine:
    """The pool's :class:`~sqlalchemy.Engine` (the default pool for ``None``)."""
    return get_entry(pool).engine


def _build(name: str) -> PoolEntry:
    config = conf.get_config()
    pool_config = conf.pool_config(name)
    with _lock:
        entry = _entries.get(name)
        if entry is not None and not entry.stale:
            return entry
        if entry is not None:
            logger.info("Database of pool %s changed; rebuilding its engine", name)
            entry.engine.dispose()
        settings_dict = conf.database_settings(pool_config.database)
        spec = build_engine_spec(
            settings_dict,
            pool_config,
            log_parameters=config.log_query_parameters,
            time_zone=conf.database_time_zone(pool_config.database),
        )
        engine = create_engine(spec.url, **spec.kwargs)
        probe = _probe_for(name, config)
        if isinstance(engine.pool, WaitAwareQueuePool):
            engine.pool.probe = probe
        _install_listeners(engine, spec, probe, pool_config)
        if _connect_guard is not None:
            _guard(engine, pool_config.database)
        if isinstance(probe, PoolRecorder):
            probe.install(engine)
        entry = PoolEntry(
            name=name,
            config=pool_config,
            spec=spec,
            engine=engine,
            sessionmaker=sessionmaker(bind=engine, expire_on_commit=False),
            probe=probe,
            settings_dict=settings_dict,
            built_for=settings_dict.get("NAME"),
            track_sites=isinstance(probe, PoolRecorder) and probe.leak_threshold is not None,
        )
        _entries[name] = entry
        return entry


def _set_connect_guard(guard: Callable[[str], None] | None) -> None:
    """Install ``guard`` on every engine, built or to be built; ``None`` switches it off.

    For the pytest plugin only. Engines built before it are guarded in place,
    so that code holding one (a module-level ``get_engine()``) is guarded too.
    """
    global _connect_guard
    with _lock:
        _connect_guard = guard
        entries = list(_entries.values())
    if guard is not None:
        for entry in entries:
            _guard(entry.engine, entry.config.database)


def _guard(engine: Engine, alias: str) -> None:
    """Make ``engine`` call the connect guard before each checkout from its pool.

    The guard runs before the pool is asked, so that a refusal leaves the pool
    as it was: raising from a pool ``checkout`` listener would leak the
    connection it had already checked out. Every checkout of an engine goes
    through ``raw_connection()`` (a new ``Connection``, and one revalidating
    after an invalidation); engines made by ``execution_options()`` reach the
    pool through their own class, so they get one that asks their parent.
    """
    target: Any = engine
    if "raw_connection" in vars(target):
        return  # already guarded
    unguarded = engine.raw_connection

    def raw_connection() -> PoolProxiedConnection:
        guard = _connect_guard
        if guard is not None:
            guard(alias)
        return unguarded()

    # Instance attributes shadow the class's methods for this engine only.
    target.raw_connection = raw_connection
    target._option_cls = _GuardedOptionEngine


class _GuardedOptionEngine(OptionEngine):
    """An ``execution_options()`` engine of a guarded engine: checkouts go through the guard."""

    def raw_connection(self) -> PoolProxiedConnection:
        return self._proxied.raw_connection()


_GuardedOptionEngine._option_cls = _GuardedOptionEngine


def _probe_for(name: str, config: Config) -> PoolProbe:
    """A full recorder when MONITORING is on; otherwise only what errors need."""
    if not config.monitoring:
        return PoolProbe(name)
    return PoolRecorder(
        name,
        leak_threshold=config.leak_threshold,
        slow_threshold=config.slow_query_threshold,
        log_parameters=config.log_query_parameters,
    )


def _install_listeners(
    engine: Engine, spec: EngineSpec, probe: PoolProbe, pool_config: PoolConfig
) -> None:
    # Listeners sit on the Engine, so they survive dispose() and the pool
    # that dispose() recreates.
    statements = spec.on_connect
    sqlite = spec.vendor == "sqlite"
    driver_read_only = spec.driver_read_only
    dialect = engine.dialect
    time_zone = spec.time_zone

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, record: Any) -> None:
        probe.connected()
        if driver_read_only:
            # The driver then begins every transaction READ ONLY: nothing for a
            # pooler to refuse (a startup parameter) or to pass on (a session SET).
            dialect.set_readonly(dbapi_connection, True)  # type: ignore[attr-defined]
        if sqlite:
            # Let SQLAlchemy, not sqlite3, decide when a transaction begins, so
            # that SAVEPOINT and transactional DDL behave (see _on_begin).
            dbapi_connection.isolation_level = None
        # As Django does on its own connection: SET only when the server's
        # default differs, which the driver knows without a round trip.
        zone = time_zone if time_zone and not _in_zone(dbapi_connection, time_zone) else None
        if statements or zone:
            cursor = dbapi_connection.cursor()
            try:
                for statement in statements:
                    cursor.execute(statement)
                if zone:
                    cursor.execute("SELECT set_config('TimeZone', %s, false)", (zone,))
            finally:
                cursor.close()
            if not sqlite:
                # A rollback (the pool's reset on return) would undo the settings.
                dbapi_connection.commit()

    if sqlite and spec.sqlite_begin:
        begin = spec.sqlite_begin

        @event.listens_for(engine, "begin")
        def _on_begin(connection: Any) -> None:
            connection.exec_driver_sql(begin)

    aborts_transaction = spec.vendor == "postgresql"
    # A write pool (not READ_ONLY) that reaches a standby was failed over.
    standby_is_unavailable = aborts_transaction and not driver_read_only
    password = spec.url.password

    @event.listens_for(engine, "handle_error")
    def _on_error(context: ExceptionContext) -> None:
        if context.connection is None:
            original = context.original_exception
            if original is not None:
                if password:
                    _drop_frames_holding(original.__traceback__, str(password))
                option = connect_option_error(original)
                if option is not None:
                    # The pool's own settings, not the database: say which to fix
                    # (SQLAlchemy raises this from the driver's error).
                    raise _bad_connect_option(pool_config, option, original)
                probe.connect_failed(original)
        elif standby_is_unavailable and not context.is_disconnect and _refused_by_standby(context):
            # The server this pool knew as its primary is (now) a hot standby:
            # a failover happened, or is under way. Treated as a disconnect, the
            # connection is discarded, the pool's other connections (to the
            # same standby) are replaced at their next checkout, and the
            # failure is classified as DatabaseUnavailableError: transient,
            # retried, counted by the breaker.
            context.is_disconnect = True
        elif context.is_disconnect:
            wrapped = context.sqlalchemy_exception
            if wrapped is not None and classify(wrapped) is TransactionTimeoutError:
                # The server ended this one connection for the transaction's own
                # slowness: the pool's other connections are sound, so do not
                # make every one of them reconnect (SQLAlchemy's default).
                context.invalidate_pool_on_disconnect = False
        elif aborts_transaction:
            # PostgreSQL has aborted the whole transaction: if the caller
            # catches this and commits, the server answers COMMIT with ROLLBACK.
            aborted_connections.add(context.connection)


def _bad_connect_option(
    pool_config: PoolConfig, option: str, exc: BaseException
) -> ConfigurationError:
    """The error for a connect that the pool's connection settings made fail."""
    options = f'DATABASES["{pool_config.database}"]["OPTIONS"]'
    connect_args = key_path("POOLS", pool_config.name, "CONNECT_ARGS")
    if option and option in pool_config.connect_args:
        fix = f'Fix {connect_args}["{option}"].'
    elif option:
        fix = f'Fix "{option}" in {options} (or add it to {connect_args} to override it).'
    else:
        fix = f"Check {options} and {connect_args}."
    return ConfigurationError(
        f'Pool "{pool_config.name}" cannot connect with its connection settings: '
        f"{summary(exc)}. {fix}",
        pool=pool_config.name,
    )


#: SQLSTATE read_only_sql_transaction: "cannot execute ... in a read-only transaction".
_READ_ONLY_TRANSACTION = "25006"


def _refused_by_standby(context: ExceptionContext) -> bool:
    """Whether the statement failed because the server is a hot standby.

    SQLSTATE 25006 also answers a write in a transaction that was made read-only
    on purpose on a primary; PostgreSQL 14 and later tell the two apart by
    reporting ``in_hot_standby`` with every connection. An older server does
    not, and is taken at its word: read-only because in recovery.
    """
    error = context.original_exception
    sqlstate = getattr(error, "sqlstate", None) or getattr(error, "pgcode", None)
    if sqlstate != _READ_ONLY_TRANSACTION:
        return False
    return _parameter_status(context, "in_hot_standby") != "off"


def _parameter_status(context: ExceptionContext, name: str) -> str | None:
    """A parameter the server reported on this connection (psycopg 3 or psycopg2), or None."""
    try:
        dbapi_connection: Any = context.connection.connection.dbapi_connection  # type: ignore[union-attr]
    except Exception:  # noqa: BLE001 - a connection already unusable reports nothing
        return None
    info = getattr(dbapi_connection, "info", None)
    if info is not None and hasattr(info, "parameter_status"):
        found = info.parameter_status(name)
    elif hasattr(dbapi_connection, "get_parameter_status"):
        found = dbapi_connection.get_parameter_status(name)
    else:
        return None
    if isinstance(found, bytes):
        found = found.decode()
    return found if isinstance(found, str) else None


#: The names PostgreSQL knows for UTC: a server started on a host set to UTC
#: reports "Etc/UTC", where Django asks for "UTC". Neither needs a SET.
_UTC_NAMES = frozenset({"UTC", "Etc/UTC", "UCT", "Etc/UCT", "Universal", "Etc/Universal"})


def _in_zone(dbapi_connection: Any, wanted: str) -> bool:
    """Whether a PostgreSQL session already runs in the time zone ``wanted``."""
    # psycopg 3 and psycopg2 (2.8+) both keep the server's ParameterStatus.
    reported = dbapi_connection.info.parameter_status("TimeZone")
    if reported is None:
        return False
    reported = str(reported)
    return reported == wanted or (reported in _UTC_NAMES and wanted in _UTC_NAMES)


def _drop_frames_holding(traceback: TracebackType | None, secret: str) -> None:
    """Cut a failed connect's traceback above the first frame whose locals hold ``secret``.

    The frames that build and open the DB-API connection (SQLAlchemy's creator,
    the driver's ``connect``) keep the connection parameters, password
    included, in their locals, and Django's DEBUG error page prints every
    frame's locals. The error and the frames above stay; the frames cut are
    library internals. Both SQLAlchemy's wrapper and the driver's exception
    share these traceback objects, so one cut covers the whole chain.
    """
    above: TracebackType | None = None
    node = traceback
    while node is not None:
        if _holds(node.tb_frame.f_locals, secret):
            if above is not None:
                above.tb_next = None
            return
        above, node = node, node.tb_next


def _holds(values: dict[str, Any], secret: str) -> bool:
    for value in values.values():
        if isinstance(value, str) and secret in value:
            return True
        if isinstance(value, dict) and any(
            isinstance(item, str) and secret in item for item in value.values()
        ):
            return True
    return False


def dispose_engines(close: bool = True) -> None:
    """Dispose every engine and forget it; the next use builds a new one.

    ``close=False`` drops the pooled connections without closing them (for a
    process that inherited them and must not end the owner's sessions).
    """
    with _lock:
        entries = list(_entries.values())
        _entries.clear()
    for entry in entries:
        if not close:
            _orphaned_pools.append(entry.engine.pool)
        entry.engine.dispose(close=close)


def _after_fork_in_child() -> None:
    # Runs in every forked child (Celery prefork, gunicorn --preload,
    # multiprocessing). The lock may have been held by a parent thread.
    global _lock
    _lock = threading.RLock()
    for entry in list(_entries.values()):
        _orphaned_pools.append(entry.engine.pool)
        entry.engine.dispose(close=False)
        entry.probe.after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)
conf.on_invalidate(dispose_engines)
