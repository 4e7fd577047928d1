"""The listeners every pool's engine gets: connection setup and the sorting of failures.

Plain SQLAlchemy. On each new DB-API connection: the driver's read-only flag,
SQLite's transaction control, the session time zone and the statements of
:class:`~.engine_args.EngineSpec`. On each failure, one listener decides what
it is: a connect that the pool's own settings made fail (a
``ConfigurationError`` naming the key, and the traceback cut above the frames
that hold the password), a standby where the primary was (a disconnect: the
pool's connections are replaced), a server timeout that ended one connection,
or a PostgreSQL transaction aborted by a statement error (remembered, so that
the scope refuses to commit it).
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.engine.interfaces import ExceptionContext

from .config import PoolConfig, key_path
from .engine_args import EngineSpec
from .errors import ConfigurationError, TransactionTimeoutError
from .pools import PoolProbe
from .state import state
from .translate import classify, connect_option_error, summary

__all__ = ["install_listeners"]


def install_listeners(
    engine: Engine, spec: EngineSpec, probe: PoolProbe, pool_config: PoolConfig
) -> None:
    """Set up each new connection of ``engine``, and sort its failures (see the module)."""
    # Listeners sit on the Engine, so they survive dispose() and the pool
    # that dispose() recreates.
    _install_connect_listeners(engine, spec, probe)
    _install_error_listener(engine, spec, probe, pool_config)


def _install_connect_listeners(engine: Engine, spec: EngineSpec, probe: PoolProbe) -> None:
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


def _install_error_listener(
    engine: Engine, spec: EngineSpec, probe: PoolProbe, pool_config: PoolConfig
) -> None:
    aborts_transaction = spec.vendor == "postgresql"
    # A write pool (not READ_ONLY) that reaches a standby was failed over.
    standby_is_unavailable = aborts_transaction and not spec.driver_read_only
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
            state.aborted_connections.add(context.connection)


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
