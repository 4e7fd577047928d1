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
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine.interfaces import ExceptionContext
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import Pool

from . import conf
from .config import Config, PoolConfig
from .engine_args import EngineSpec, build_engine_spec
from .metrics.recorder import PoolRecorder
from .pools import PoolProbe, WaitAwareQueuePool

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
        _install_listeners(engine, spec, probe)
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


def _install_listeners(engine: Engine, spec: EngineSpec, probe: PoolProbe) -> None:
    # Listeners sit on the Engine, so they survive dispose() and the pool
    # that dispose() recreates.
    statements = spec.on_connect
    sqlite = spec.vendor == "sqlite"
    time_zone = spec.time_zone

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, record: Any) -> None:
        probe.connected()
        if sqlite:
            # Let SQLAlchemy, not sqlite3, decide when a transaction begins, so
            # that SAVEPOINT and transactional DDL behave (see _on_begin).
            dbapi_connection.isolation_level = None
        # As Django does on its own connection: SET only when the server's
        # default differs, which the driver knows without a round trip.
        zone = time_zone if time_zone and _time_zone(dbapi_connection) != time_zone else None
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
    password = spec.url.password

    @event.listens_for(engine, "handle_error")
    def _on_error(context: ExceptionContext) -> None:
        if context.connection is None:
            if context.original_exception is not None:
                probe.connect_failed(context.original_exception)
                if password:
                    _drop_frames_holding(context.original_exception.__traceback__, str(password))
        elif aborts_transaction and not context.is_disconnect:
            # PostgreSQL has aborted the whole transaction: if the caller
            # catches this and commits, the server answers COMMIT with ROLLBACK.
            aborted_connections.add(context.connection)


def _time_zone(dbapi_connection: Any) -> str | None:
    """The session time zone a PostgreSQL server reported when the connection opened."""
    # psycopg 3 and psycopg2 (2.8+) both keep the server's ParameterStatus.
    zone = dbapi_connection.info.parameter_status("TimeZone")
    return str(zone) if zone is not None else None


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
