"""The error taxonomy and the translation of driver failures onto it.

Pure tests over :mod:`mingus_sessions._core.translate` and :mod:`mingus_sessions._core.errors`:
they run the same whatever ``MINGUS_TEST_DATABASE`` says. Driver exceptions are
real objects (psycopg 3 error classes, sqlite3 errors raised by a real locked
file, psycopg failures from real sockets), wrapped the way SQLAlchemy wraps them
(``DBAPIError.instance``); psycopg2 and mysqlclient are not installed here, so
their exceptions are stand-ins carrying exactly what the real ones carry.
"""

from __future__ import annotations

import pickle
import socket
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from sqlalchemy import create_engine
from sqlalchemy import exc as sa_exc
from sqlalchemy.pool import NullPool

from mingus_sessions._core.errors import (
    AuthenticationError,
    CircuitOpenError,
    ConfigurationError,
    ConnectionTimeoutError,
    DatabaseConnectionError,
    DatabaseUnavailableError,
    DeadlockError,
    LockTimeoutError,
    PoolExhaustedError,
    SerializationError,
    SessionError,
    StatementTimeoutError,
    TransactionError,
    TransactionTimeoutError,
)
from mingus_sessions._core.translate import classify, is_transient, pool_exhausted, translate

try:
    import psycopg
    import psycopg.errors
except ImportError:  # pragma: no cover - psycopg is a dev dependency
    psycopg = None  # type: ignore[assignment]

needs_psycopg = pytest.mark.skipif(psycopg is None, reason="psycopg 3 is not installed")


def _wrap(
    orig: BaseException,
    base: type[Exception],
    *,
    invalidated: bool = False,
    statement: str = "SELECT 1",
    params: Any = None,
) -> BaseException:
    """``orig`` wrapped the way SQLAlchemy wraps a DB-API error raised by a statement."""
    return sa_exc.DBAPIError.instance(
        statement, params, orig, base, connection_invalidated=invalidated
    )


def _assert_translated(
    exc: BaseException, expected: type[SessionError], pool: str = "main"
) -> SessionError:
    assert classify(exc) is expected
    assert is_transient(exc) is expected.transient
    error = translate(exc, pool)
    assert type(error) is expected
    assert error is not None
    assert error.pool == pool
    assert error.transient is expected.transient
    assert f'"{pool}"' in str(error)
    assert is_transient(error) is expected.transient
    return error


def _assert_untranslated(exc: BaseException) -> None:
    assert classify(exc) is None
    assert is_transient(exc) is False
    assert translate(exc, "main") is None


# -- psycopg 3 -------------------------------------------------------------------------------

_PG_CODES = [
    ("40P01", DeadlockError),
    ("40001", SerializationError),
    ("55P03", LockTimeoutError),
    ("28P01", AuthenticationError),
    ("28000", AuthenticationError),
    ("53300", DatabaseUnavailableError),
    ("57P01", DatabaseUnavailableError),
    ("57P02", DatabaseUnavailableError),
    ("57P03", DatabaseUnavailableError),
    ("08006", DatabaseUnavailableError),
    ("08001", DatabaseUnavailableError),
    ("08004", DatabaseUnavailableError),
]


@needs_psycopg
@pytest.mark.parametrize(("sqlstate", "expected"), _PG_CODES)
def test_psycopg3_sqlstate_maps_to_its_error(sqlstate: str, expected: type[SessionError]) -> None:
    """A psycopg 3 error wrapped by SQLAlchemy translates by its SQLSTATE to the right class."""
    orig = psycopg.errors.lookup(sqlstate)("message from the server")
    assert orig.sqlstate == sqlstate
    wrapped = _wrap(orig, psycopg.Error)
    assert isinstance(wrapped, sa_exc.OperationalError)
    _assert_translated(wrapped, expected)


@needs_psycopg
@pytest.mark.parametrize(
    ("sqlstate", "text", "setting"),
    [
        ("57014", "canceling statement due to statement timeout", "statement_timeout"),
        (
            "25P03",
            "terminating connection due to idle-in-transaction timeout",
            "idle_in_transaction_session_timeout",
        ),
        ("25P04", "terminating connection due to transaction timeout", "transaction_timeout"),
    ],
)
def test_server_timeouts_name_the_setting_that_ended_the_work(
    sqlstate: str, text: str, setting: str
) -> None:
    """A statement or transaction the server ended by a timeout says which setting did it."""
    orig = psycopg.errors.lookup(sqlstate)(text)
    # 25P03/25P04 end the connection too: SQLAlchemy reports them invalidated.
    wrapped = _wrap(orig, psycopg.Error, invalidated=sqlstate != "57014")
    expected = StatementTimeoutError if sqlstate == "57014" else TransactionTimeoutError
    error = _assert_translated(wrapped, expected)
    assert f"server's {setting}" in str(error)
    assert text in str(error)
    assert error.transient is False


@needs_psycopg
def test_a_cancel_request_is_not_a_statement_timeout() -> None:
    """57014 from pg_cancel_backend or a client's cancel stays untranslated."""
    orig = psycopg.errors.lookup("57014")("canceling statement due to user request")
    _assert_untranslated(_wrap(orig, psycopg.Error))


@needs_psycopg
@pytest.mark.parametrize(
    ("sqlstate", "wrapper"),
    [
        ("23505", sa_exc.IntegrityError),
        ("23503", sa_exc.IntegrityError),
        ("22001", sa_exc.DataError),
        ("22003", sa_exc.DataError),
        ("42P01", sa_exc.ProgrammingError),
        ("42601", sa_exc.ProgrammingError),
    ],
)
def test_psycopg3_data_errors_are_not_translated(
    sqlstate: str, wrapper: type[sa_exc.DBAPIError]
) -> None:
    """IntegrityError, DataError and ProgrammingError stay untranslated, even at commit."""
    wrapped = _wrap(psycopg.errors.lookup(sqlstate)("bad data"), psycopg.Error)
    assert type(wrapped) is wrapper
    _assert_untranslated(wrapped)
    assert translate(wrapped, "main", at_commit=True) is None


@needs_psycopg
@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (
            'connection failed: connection to server at "127.0.0.1", port 5432 failed: '
            "Connection refused\n\tIs the server running on that host and accepting TCP/IP "
            "connections?",
            DatabaseUnavailableError,
        ),
        ("connection timeout expired", ConnectionTimeoutError),
        (
            'connection failed: connection to server at "127.0.0.1", port 5432 failed: '
            'FATAL:  password authentication failed for user "app"',
            AuthenticationError,
        ),
        ("FATAL:  sorry, too many clients already", DatabaseUnavailableError),
        ("FATAL:  the database system is starting up", DatabaseUnavailableError),
        ("server closed the connection unexpectedly", DatabaseUnavailableError),
    ],
    ids=["refused", "timeout", "password", "too_many_clients", "starting_up", "closed"],
)
def test_psycopg3_connect_messages_without_sqlstate_fall_back_to_text(
    message: str, expected: type[SessionError]
) -> None:
    """Connection failures that libpq reports as text only are classified by their message."""
    orig = psycopg.OperationalError(message)
    assert orig.sqlstate is None
    _assert_translated(_wrap(orig, psycopg.Error), expected)


@needs_psycopg
@pytest.mark.parametrize(
    "reason",
    [
        'FATAL:  role "app" is not permitted to log in',
        'FATAL:  role "app" does not exist',
        'FATAL:  no pg_hba.conf entry for host "10.0.0.7", user "app", database "app", '
        "no encryption",
    ],
    ids=["nologin", "no_such_role", "pg_hba"],
)
def test_psycopg3_refused_login_text_is_authentication_error(reason: str) -> None:
    """A login refused by the server (28000, reported as text by libpq) is AuthenticationError."""
    orig = psycopg.OperationalError(
        f'connection failed: connection to server at "127.0.0.1", port 5432 failed: {reason}'
    )
    assert orig.sqlstate is None
    _assert_translated(_wrap(orig, psycopg.Error), AuthenticationError)


@needs_psycopg
def test_message_fallback_does_not_apply_to_data_errors() -> None:
    """A data error whose text happens to mention a connection failure stays untranslated."""
    orig = psycopg.ProgrammingError("function connection_refused() does not exist")
    wrapped = _wrap(orig, psycopg.Error)
    assert isinstance(wrapped, sa_exc.ProgrammingError)
    _assert_untranslated(wrapped)


@pytest.fixture
def closed_port() -> int:
    """A local TCP port that nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@needs_psycopg
def test_real_refused_connection_is_database_unavailable(closed_port: int) -> None:
    """A real psycopg "connection refused" translates to DatabaseUnavailableError."""
    with pytest.raises(psycopg.OperationalError) as info:
        psycopg.connect(host="127.0.0.1", port=closed_port, dbname="x", user="x", connect_timeout=5)
    _assert_translated(_wrap(info.value, psycopg.Error), DatabaseUnavailableError)


@needs_psycopg
def test_real_connection_closed_by_server_is_database_unavailable() -> None:
    """A server that accepts and hangs up at once gives a real "unavailable" psycopg error."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]

        def hang_up() -> None:
            conn, _ = server.accept()
            conn.close()

        thread = threading.Thread(target=hang_up)
        thread.start()
        try:
            with pytest.raises(psycopg.OperationalError) as info:
                psycopg.connect(
                    host="127.0.0.1", port=port, dbname="x", user="x", connect_timeout=5
                )
        finally:
            thread.join(10)
    assert "server closed the connection unexpectedly" in str(info.value)
    _assert_translated(_wrap(info.value, psycopg.Error), DatabaseUnavailableError)


@needs_psycopg
@pytest.mark.slow
def test_real_connect_timeout_is_connection_timeout_error() -> None:
    """A server that never answers the startup packet gives a real ConnectionTimeoutError."""
    with socket.socket() as server:  # listens, never accepts: the kernel completes the handshake
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        with pytest.raises(psycopg.OperationalError) as info:
            psycopg.connect(
                host="127.0.0.1",
                port=server.getsockname()[1],
                dbname="x",
                user="x",
                connect_timeout=1,
            )
    _assert_translated(_wrap(info.value, psycopg.Error), ConnectionTimeoutError)


# -- psycopg2-style exceptions ---------------------------------------------------------------
# psycopg2 is not installed in this environment. Its exceptions carry the
# SQLSTATE in ``pgcode`` (``None`` for connection failures) and have no
# ``sqlstate`` attribute; these stand-ins carry exactly that. SQLAlchemy picks
# its wrapper by the DB-API class name, so the names match psycopg2's.


class _Psycopg2:
    class Error(Exception):
        def __init__(self, message: str, pgcode: str | None = None) -> None:
            super().__init__(message)
            self.pgcode = pgcode

    class DatabaseError(Error):
        pass

    class OperationalError(DatabaseError):
        pass

    class IntegrityError(DatabaseError):
        pass


@pytest.mark.parametrize(
    ("pgcode", "message", "expected"),
    [
        ("40P01", "deadlock detected", DeadlockError),
        ("40001", "could not serialize access due to concurrent update", SerializationError),
        ("55P03", "canceling statement due to lock timeout", LockTimeoutError),
        ("57P01", "terminating connection due to administrator command", DatabaseUnavailableError),
        ("28P01", 'password authentication failed for user "app"', AuthenticationError),
        (None, "could not connect to server: Connection refused", DatabaseUnavailableError),
        (None, "server closed the connection unexpectedly", DatabaseUnavailableError),
        (None, "timeout expired", ConnectionTimeoutError),
    ],
)
def test_psycopg2_style_pgcode_maps_to_its_error(
    pgcode: str | None, message: str, expected: type[SessionError]
) -> None:
    """A psycopg2-style error translates by ``pgcode``, or by its text when it has none."""
    orig = _Psycopg2.OperationalError(message, pgcode)
    assert not hasattr(orig, "sqlstate")
    wrapped = _wrap(orig, _Psycopg2.Error)
    assert isinstance(wrapped, sa_exc.OperationalError)
    _assert_translated(wrapped, expected)


def test_psycopg2_style_unique_violation_is_not_translated() -> None:
    """A psycopg2-style unique violation (pgcode 23505) stays SQLAlchemy's IntegrityError."""
    wrapped = _wrap(_Psycopg2.IntegrityError("duplicate key", "23505"), _Psycopg2.Error)
    assert isinstance(wrapped, sa_exc.IntegrityError)
    _assert_untranslated(wrapped)


# -- MySQL (mysqlclient) ---------------------------------------------------------------------
# mysqlclient is not installed here either. Its exceptions live in
# ``MySQLdb._exceptions`` and carry ``(errno, message)`` as their args.


class _MySQLdb:
    class Error(Exception):
        __module__ = "MySQLdb._exceptions"

    class DatabaseError(Error):
        __module__ = "MySQLdb._exceptions"

    class OperationalError(DatabaseError):
        __module__ = "MySQLdb._exceptions"

    class IntegrityError(DatabaseError):
        __module__ = "MySQLdb._exceptions"


@pytest.mark.parametrize(
    ("errno", "message", "expected"),
    [
        (1213, "Deadlock found when trying to get lock; try restarting transaction", DeadlockError),
        (1205, "Lock wait timeout exceeded; try restarting transaction", LockTimeoutError),
        (2006, "MySQL server has gone away", DatabaseUnavailableError),
        (2013, "Lost connection to MySQL server during query", DatabaseUnavailableError),
        (1040, "Too many connections", DatabaseUnavailableError),
        (
            1969,
            "Query execution was interrupted (max_statement_time exceeded)",
            StatementTimeoutError,
        ),
        (
            3024,
            "Query execution was interrupted, maximum statement execution time exceeded",
            StatementTimeoutError,
        ),
        (
            1045,
            "Access denied for user 'app'@'localhost' (using password: YES)",
            AuthenticationError,
        ),
    ],
)
def test_mysql_error_numbers_map_to_their_errors(
    errno: int, message: str, expected: type[SessionError]
) -> None:
    """A mysqlclient error translates by its error number."""
    orig = _MySQLdb.OperationalError(errno, message)
    assert type(orig).__module__ == "MySQLdb._exceptions"
    _assert_translated(_wrap(orig, _MySQLdb.Error), expected)


def test_mysql_data_errors_and_unknown_numbers_are_not_translated() -> None:
    """A duplicate key (1062) and an unknown column (1054) stay untranslated."""
    duplicate = _wrap(
        _MySQLdb.IntegrityError(1062, "Duplicate entry 'a' for key 'title'"), _MySQLdb.Error
    )
    assert isinstance(duplicate, sa_exc.IntegrityError)
    _assert_untranslated(duplicate)
    unknown = _wrap(
        _MySQLdb.OperationalError(1054, "Unknown column 'x' in 'field list'"), _MySQLdb.Error
    )
    _assert_untranslated(unknown)


def test_error_numbers_of_other_modules_are_not_read_as_mysql() -> None:
    """An int first argument means a MySQL error number only for MySQLdb's exceptions."""

    class OperationalError(Exception):
        pass

    _assert_untranslated(_wrap(OperationalError(1213, "something else"), Exception))


# -- SQLite ----------------------------------------------------------------------------------


@pytest.fixture
def locked_sqlite(tmp_path: Path) -> Iterator[Path]:
    """A SQLite file whose write lock another connection holds (BEGIN IMMEDIATE)."""
    path = tmp_path / "locked.db"
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("CREATE TABLE t (x integer)")
        holder.execute("BEGIN IMMEDIATE")
        yield path
        holder.execute("ROLLBACK")
    finally:
        holder.close()


def test_real_sqlite_database_is_locked_is_lock_timeout(locked_sqlite: Path) -> None:
    """A real "database is locked" (SQLITE_BUSY, code 5) translates to LockTimeoutError."""
    writer = sqlite3.connect(locked_sqlite, isolation_level=None, timeout=0)
    try:
        with pytest.raises(sqlite3.OperationalError) as info:
            writer.execute("INSERT INTO t VALUES (1)")
    finally:
        writer.close()
    assert str(info.value) == "database is locked"
    assert info.value.sqlite_errorcode == 5
    _assert_translated(_wrap(info.value, sqlite3.Error), LockTimeoutError)


def test_sqlite_locked_through_a_real_engine_is_lock_timeout(locked_sqlite: Path) -> None:
    """The same lock met through a real SQLAlchemy engine translates to LockTimeoutError."""
    engine = create_engine(
        f"sqlite+pysqlite:///{locked_sqlite}", poolclass=NullPool, connect_args={"timeout": 0}
    )
    try:
        with pytest.raises(sa_exc.OperationalError) as info, engine.begin() as conn:
            conn.exec_driver_sql("INSERT INTO t VALUES (1)")
    finally:
        engine.dispose()
    _assert_translated(info.value, LockTimeoutError, pool="other")


def test_real_sqlite_cannot_open_is_database_unavailable(tmp_path: Path) -> None:
    """A real SQLITE_CANTOPEN (code 14) translates to DatabaseUnavailableError."""
    with pytest.raises(sqlite3.OperationalError) as info:
        sqlite3.connect(tmp_path / "missing-dir" / "x.db")
    assert info.value.sqlite_errorcode == 14
    _assert_translated(_wrap(info.value, sqlite3.Error), DatabaseUnavailableError)


def test_real_sqlite_unique_violation_is_not_translated() -> None:
    """A real SQLite unique violation stays SQLAlchemy's IntegrityError."""
    conn = sqlite3.connect(":memory:")
    try:
        conn.execute("CREATE TABLE t (x integer UNIQUE)")
        conn.execute("INSERT INTO t VALUES (1)")
        with pytest.raises(sqlite3.IntegrityError) as info:
            conn.execute("INSERT INTO t VALUES (1)")
    finally:
        conn.close()
    wrapped = _wrap(info.value, sqlite3.Error)
    assert isinstance(wrapped, sa_exc.IntegrityError)
    _assert_untranslated(wrapped)


# -- SQLAlchemy's own failures -----------------------------------------------------------------


def test_sqlalchemy_pool_timeout_is_pool_exhausted() -> None:
    """SQLAlchemy's pool TimeoutError translates to PoolExhaustedError (transient)."""
    error = _assert_translated(
        sa_exc.TimeoutError("QueuePool limit of size 5 overflow 5 reached"), PoolExhaustedError
    )
    assert error.transient is True


def test_sqlalchemy_disconnection_error_is_database_unavailable() -> None:
    """SQLAlchemy's DisconnectionError translates to DatabaseUnavailableError."""
    _assert_translated(
        sa_exc.DisconnectionError("connection invalidated"), DatabaseUnavailableError
    )


@needs_psycopg
@pytest.mark.parametrize("dbapi_class", ["OperationalError", "InterfaceError"])
def test_connection_invalidated_is_database_unavailable(dbapi_class: str) -> None:
    """A failure SQLAlchemy flagged as a disconnect (connection_invalidated) is "unavailable"."""
    orig = getattr(psycopg, dbapi_class)("SSL SYSCALL error: EOF detected")
    plain = _wrap(orig, psycopg.Error)
    assert plain.connection_invalidated is False
    _assert_untranslated(plain)
    invalidated = _wrap(orig, psycopg.Error, invalidated=True)
    assert invalidated.connection_invalidated is True
    _assert_translated(invalidated, DatabaseUnavailableError)


def test_unrelated_exceptions_are_not_translated() -> None:
    """Exceptions that are not database failures are neither translated nor transient."""
    for exc in (ValueError("x"), RuntimeError("y"), KeyboardInterrupt()):
        _assert_untranslated(exc)


# -- at commit --------------------------------------------------------------------------------


@needs_psycopg
def test_unclassified_operational_error_at_commit_becomes_transaction_error() -> None:
    """At commit, an unclassified OperationalError becomes a TransactionError, never a success."""
    wrapped = _wrap(
        psycopg.OperationalError("unexpected response from the server"),
        psycopg.Error,
        statement="COMMIT",
    )
    _assert_untranslated(wrapped)
    error = translate(wrapped, "main", at_commit=True)
    assert type(error) is TransactionError
    assert error is not None
    assert error.pool == "main"
    assert error.transient is False
    assert '"main"' in str(error)
    assert "unexpected response from the server" in str(error)


@needs_psycopg
def test_classified_error_at_commit_keeps_its_class() -> None:
    """At commit, a classified failure (a serialization failure) keeps its own class."""
    wrapped = _wrap(
        psycopg.errors.SerializationFailure("could not serialize"),
        psycopg.Error,
        statement="COMMIT",
    )
    error = translate(wrapped, "main", at_commit=True)
    assert type(error) is SerializationError
    assert error is not None
    assert error.transient is True


# -- messages -------------------------------------------------------------------------------


@needs_psycopg
def test_translated_message_has_the_driver_line_but_no_statement_or_parameters() -> None:
    """The message names the pool and the driver's first line, not the SQL or its parameters."""
    orig = psycopg.errors.DeadlockDetected(
        "deadlock detected\nDETAIL:  Process 1 waits for ShareLock on transaction 2"
    )
    wrapped = _wrap(
        orig,
        psycopg.Error,
        statement="UPDATE accounts SET owner = %(owner)s WHERE id = 1",
        params={"owner": "h4-distinctive-parameter"},
    )
    error = translate(wrapped, "analytics")
    assert error is not None
    text = str(error)
    assert '"analytics"' in text
    assert "deadlock detected" in text
    assert "h4-distinctive-parameter" not in text
    assert "UPDATE accounts" not in text
    assert "Process 1 waits" not in text


def test_translation_without_a_pool_says_unnamed() -> None:
    """Translating without a pool name gives pool None and an "(unnamed)" message."""
    error = translate(sa_exc.TimeoutError("QueuePool limit"), None)
    assert isinstance(error, PoolExhaustedError)
    assert error.pool is None
    assert "(unnamed)" in str(error)


def test_our_own_errors_pass_through_untranslated() -> None:
    """A SessionError is its own class, keeps its transient flag and is never re-translated."""
    for error in (
        DeadlockError("d", pool="main"),
        AuthenticationError("a", pool="main"),
        CircuitOpenError("c", pool="main"),
    ):
        assert classify(error) is type(error)
        assert is_transient(error) is type(error).transient
        assert translate(error, "main") is None
        assert translate(error, "main", at_commit=True) is None


# -- the hierarchy ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("child", "parent"),
    [
        (ConfigurationError, SessionError),
        (ConfigurationError, ImproperlyConfigured),
        (TransactionError, SessionError),
        (DeadlockError, TransactionError),
        (SerializationError, TransactionError),
        (LockTimeoutError, TransactionError),
        (StatementTimeoutError, TransactionError),
        (TransactionTimeoutError, TransactionError),
        (DatabaseConnectionError, SessionError),
        (PoolExhaustedError, DatabaseConnectionError),
        (ConnectionTimeoutError, DatabaseConnectionError),
        (AuthenticationError, DatabaseConnectionError),
        (DatabaseUnavailableError, DatabaseConnectionError),
        (CircuitOpenError, DatabaseConnectionError),
        (SessionError, Exception),
    ],
)
def test_error_tree_matches_the_design(child: type[Exception], parent: type[Exception]) -> None:
    """Each error class sits where DESIGN.md's error tree puts it."""
    assert issubclass(child, parent)


def test_error_tree_has_no_cross_links() -> None:
    """Transaction errors are not connection errors, and neither branch is a configuration error."""
    assert not issubclass(DeadlockError, DatabaseConnectionError)
    assert not issubclass(StatementTimeoutError, DatabaseConnectionError)
    assert not issubclass(TransactionTimeoutError, DatabaseConnectionError)
    assert not issubclass(DatabaseUnavailableError, TransactionError)
    assert not issubclass(TransactionError, ImproperlyConfigured)
    assert not issubclass(DatabaseConnectionError, ImproperlyConfigured)


@pytest.mark.parametrize(
    ("cls", "transient"),
    [
        (SessionError, False),
        (ConfigurationError, False),
        (TransactionError, False),
        (DeadlockError, True),
        (SerializationError, True),
        (LockTimeoutError, True),
        (StatementTimeoutError, False),
        (TransactionTimeoutError, False),
        (DatabaseConnectionError, True),
        (PoolExhaustedError, True),
        (ConnectionTimeoutError, True),
        (AuthenticationError, False),
        (DatabaseUnavailableError, True),
        (CircuitOpenError, False),
    ],
)
def test_error_pickles_with_pool_and_transient(cls: type[SessionError], transient: bool) -> None:
    """Every error survives a pickle round trip with its class, message, pool and transient flag."""
    error = cls(f'{cls.__name__} on pool "main"', pool="main")
    assert error.transient is transient
    assert is_transient(error) is transient
    for protocol in range(2, pickle.HIGHEST_PROTOCOL + 1):
        copy = pickle.loads(pickle.dumps(error, protocol=protocol))
        assert type(copy) is cls
        assert str(copy) == str(error)
        assert copy.pool == "main"
        assert copy.transient is transient
    assert pickle.loads(pickle.dumps(cls("no pool"))).pool is None


# -- pool_exhausted ---------------------------------------------------------------------------


def _exhausted(connect_error: BaseException | None) -> PoolExhaustedError:
    return pool_exhausted(
        "main",
        size=5,
        checked_out=10,
        overflow=5,
        max_overflow=5,
        waiters=3,
        timeout=10.0,
        connect_error=connect_error,
    )


def test_pool_exhausted_message_tells_full_pool_from_unreachable_database() -> None:
    """pool_exhausted() says "in use" without a connect error and "unreachable" with one."""
    full = _exhausted(None)
    down = _exhausted(
        _wrap(
            _Psycopg2.OperationalError("could not connect to server: Connection refused"),
            _Psycopg2.Error,
            statement="SELECT secret_column",
            params={"p": "h4-param"},
        )
    )
    for error in (full, down):
        assert type(error) is PoolExhaustedError
        assert error.pool == "main"
        assert error.transient is True
        text = str(error)
        for fragment in (
            '"main"',
            "10 s",
            "size 5",
            "checked out 10",
            "overflow 5 of 5",
            "waiters 3",
        ):
            assert fragment in text
    assert str(full) != str(down)
    assert "in use" in str(full)
    assert "unreachable" not in str(full)
    assert "unreachable" in str(down)
    assert "Connection refused" in str(down)
    assert "h4-param" not in str(down)
    assert "secret_column" not in str(down)


def test_pool_exhausted_by_a_full_queue_says_so() -> None:
    """A checkout refused past MAX_WAITING says the queue was full, not that it timed out."""
    error = pool_exhausted(
        "main",
        size=5,
        checked_out=5,
        overflow=0,
        max_overflow=0,
        waiters=8,
        timeout=10.0,
        connect_error=None,
        max_waiting=8,
    )
    assert type(error) is PoolExhaustedError
    assert error.transient is True
    text = str(error)
    assert "queue was full: 8 callers already waited" in text
    assert "MAX_WAITING (8)" in text
    assert "within 10 s" not in text
