"""Map driver failures onto the error taxonomy, and say which ones are transient.

Plain Python over SQLAlchemy. Classification reads the SQLSTATE (psycopg 3's
``sqlstate``, psycopg2's ``pgcode``), MySQL's error number, SQLite's extended
error code, and SQLAlchemy's own disconnect detection. Data errors
(``IntegrityError``, ``DataError``, ``ProgrammingError``) are never translated.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import exc as sa_exc

from .errors import (
    AuthenticationError,
    CircuitOpenError,
    CommitOutcomeUnknownError,
    ConnectionTimeoutError,
    DatabaseConnectionError,
    DatabaseUnavailableError,
    DeadlockError,
    LockTimeoutError,
    PoolExhaustedError,
    ReadOnlyTransactionError,
    SerializationError,
    SessionError,
    StatementTimeoutError,
    TransactionError,
    TransactionTimeoutError,
)

__all__ = [
    "classify",
    "commit_outcome_unknown",
    "connect_option_error",
    "is_transient",
    "pool_exhausted",
    "summary",
    "translate",
]

_SQLSTATE: dict[str, type[SessionError]] = {
    "40P01": DeadlockError,
    "40001": SerializationError,
    "55P03": LockTimeoutError,
    "28P01": AuthenticationError,
    "28000": AuthenticationError,
    "53300": DatabaseUnavailableError,  # too_many_connections
    "57P01": DatabaseUnavailableError,  # admin_shutdown (pg_terminate_backend)
    "57P02": DatabaseUnavailableError,  # crash_shutdown
    "57P03": DatabaseUnavailableError,  # cannot_connect_now (starting up)
    # The server's own time limits: the database is fine, the work was too slow.
    "25P03": TransactionTimeoutError,  # idle_in_transaction_session_timeout
    "25P04": TransactionTimeoutError,  # transaction_timeout (PostgreSQL 17)
    # A write refused by a read-only transaction; on a write pool that reached
    # a standby the listeners mark it a disconnect first (see classify).
    "25006": ReadOnlyTransactionError,
}

_MYSQL: dict[int, type[SessionError]] = {
    1213: DeadlockError,
    1205: LockTimeoutError,
    3572: LockTimeoutError,  # NOWAIT could not lock
    1045: AuthenticationError,
    1040: DatabaseUnavailableError,  # too many connections
    1053: DatabaseUnavailableError,  # server shutdown in progress
    1927: DatabaseUnavailableError,  # connection killed
    2002: DatabaseUnavailableError,
    2003: DatabaseUnavailableError,
    2005: DatabaseUnavailableError,
    2006: DatabaseUnavailableError,
    2013: DatabaseUnavailableError,
    4031: DatabaseUnavailableError,  # disconnected by the server (idle timeout)
    1969: StatementTimeoutError,  # MariaDB's max_statement_time
    3024: StatementTimeoutError,  # MySQL's max_execution_time
    1792: ReadOnlyTransactionError,  # a statement a READ ONLY transaction refuses
}

_SQLITE: dict[int, type[SessionError]] = {
    5: LockTimeoutError,  # SQLITE_BUSY: "database is locked"
    6: LockTimeoutError,  # SQLITE_LOCKED: "database table is locked"
    8: ReadOnlyTransactionError,  # SQLITE_READONLY (query_only, a read-only file)
    14: DatabaseUnavailableError,  # SQLITE_CANTOPEN
}

# Connection failures that reach us without a code (libpq reports most of them
# as text only).
_MESSAGES: tuple[tuple[str, type[SessionError]], ...] = (
    ("password authentication failed", AuthenticationError),
    ("is not permitted to log in", AuthenticationError),
    ("no pg_hba.conf entry", AuthenticationError),
    ("no password supplied", AuthenticationError),
    ("timeout expired", ConnectionTimeoutError),
    ("connection timed out", ConnectionTimeoutError),
    ("connection refused", DatabaseUnavailableError),
    ("could not connect", DatabaseUnavailableError),
    ("no such file or directory", DatabaseUnavailableError),
    ("server closed the connection", DatabaseUnavailableError),
    ("connection is closed", DatabaseUnavailableError),
    ("the database system is", DatabaseUnavailableError),
    ("too many clients", DatabaseUnavailableError),
    ("terminating connection", DatabaseUnavailableError),
)

_DATA_ERRORS = (sa_exc.IntegrityError, sa_exc.DataError, sa_exc.ProgrammingError)


def _driver_error(exc: BaseException) -> BaseException | None:
    if isinstance(exc, sa_exc.DBAPIError):
        return exc.orig
    return exc


#: The server setting behind each timeout code, named in the error's message.
_TIMEOUT_SETTINGS: dict[str | int, str] = {
    "57014": "statement_timeout",
    "25P03": "idle_in_transaction_session_timeout",
    "25P04": "transaction_timeout",
    1969: "max_statement_time",
    3024: "max_execution_time",
}


def _code(orig: BaseException) -> str | int | None:
    """The driver's error code: a SQLSTATE string, or MySQL's error number."""
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if isinstance(sqlstate, str):
        return sqlstate
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int) and type(orig).__module__.startswith("MySQLdb"):
        return args[0]
    return None


def _code_class(orig: BaseException) -> type[SessionError] | None:
    code = _code(orig)
    if isinstance(code, str):
        if code in _SQLSTATE:
            return _SQLSTATE[code]
        if code == "57014":
            # query_canceled: by statement_timeout, or by a cancel request
            # (pg_cancel_backend, a client's cancel), which is not translated.
            return StatementTimeoutError if "statement timeout" in str(orig) else None
        if code.startswith("08"):  # connection_exception class
            return DatabaseUnavailableError
        return None
    if isinstance(code, int):
        return _MYSQL.get(code)
    sqlite_code = getattr(orig, "sqlite_errorcode", None)
    if isinstance(sqlite_code, int):
        return _SQLITE.get(sqlite_code & 0xFF)
    return None


def classify(exc: BaseException) -> type[SessionError] | None:
    """The taxonomy class ``exc`` belongs to, or ``None`` if it is not translated."""
    if isinstance(exc, SessionError):
        return type(exc)
    if isinstance(exc, sa_exc.TimeoutError):
        return PoolExhaustedError
    if isinstance(exc, sa_exc.DisconnectionError):
        return DatabaseUnavailableError
    if not isinstance(exc, sa_exc.DBAPIError):
        return None
    orig = exc.orig
    found = _code_class(orig) if orig is not None else None
    if found is ReadOnlyTransactionError and exc.connection_invalidated:
        # 25006 from a write pool's server that turned out to be a standby:
        # a failover, which the listeners made a disconnect.
        return DatabaseUnavailableError
    if found is not None:
        return found
    if isinstance(exc, _DATA_ERRORS):
        return None
    if exc.connection_invalidated:
        return DatabaseUnavailableError
    if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError):
        text = str(orig).lower()
        if 'role "' in text and "does not exist" in text:  # a login with an unknown user
            return AuthenticationError
        for fragment, cls in _MESSAGES:
            if fragment in text:
                return cls
    return None


# A connect refused because of the connection's own settings, not the
# database's state: libpq's and the server's words for a bad option (the name
# is the first group when the message says which), mysqlclient's.
_OPTION_ERRORS: tuple[re.Pattern[str], ...] = tuple(
    re.compile(pattern)
    for pattern in (
        r'invalid connection option "([^"]+)"',
        r'for connection option "([^"]+)"',
        r"^bad value for (\w+):",
        r"invalid (\w+) value: ",
        r"invalid command-line argument for server process",
        r"unrecognized configuration parameter",
        r"invalid value for parameter",
        r"^Unknown (ssl_mode) specification",
        r"^Can't initialize (character set)",
    )
)
#: The connect() keyword behind a name that a message gives in other words.
_OPTION_ALIASES = {"character set": "charset"}
_SERVER_OPTIONS = ("invalid command-line", "unrecognized configuration", "invalid value for param")


def connect_option_error(exc: BaseException) -> str | None:
    """The option a failed connect blames, if the connection's settings caused it.

    Returns the option's name (``"sslmode"``), ``"options"`` for a server
    parameter given through libpq's ``options``, ``""`` when the message says
    the settings are wrong but not which one, and ``None`` for failures that
    are the database's or the network's (refused, unknown host, down).
    """
    orig = _driver_error(exc)
    if orig is None:
        return None
    args: tuple[Any, ...] = getattr(orig, "args", ())
    # mysqlclient's errors carry (errno, text); the others' str() is the text.
    text = (args[1] if len(args) > 1 and isinstance(args[1], str) else str(orig)).strip()
    if text.startswith("connection is bad: "):
        text = text[len("connection is bad: ") :]
    if "failed: " in text and "connection to server" in text:
        text = text.rsplit("failed: ", 1)[1]
    text = text.removeprefix("FATAL:").strip()
    for pattern in _OPTION_ERRORS:
        found = pattern.search(text)
        if found is None:
            continue
        if text.startswith(_SERVER_OPTIONS):
            return "options"
        name = found.group(1) if found.groups() else ""
        return _OPTION_ALIASES.get(name, name)
    return None


def is_transient(exc: BaseException) -> bool:
    """True for failures where retrying the whole transaction may succeed."""
    if isinstance(exc, SessionError):
        return exc.transient
    found = classify(exc)
    return found is not None and found.transient


def translate(
    exc: BaseException, pool: str | None, *, at_commit: bool = False
) -> SessionError | None:
    """The :class:`SessionError` to raise instead of ``exc``, or ``None`` to let it through.

    At commit, an operational failure that is not otherwise classified still
    becomes a :class:`TransactionError`: the caller must never mistake it for a
    success. The caller raises the result ``from exc``.
    """
    if isinstance(exc, SessionError):
        return None
    found = classify(exc)
    if found is None:
        if at_commit and isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError):
            return TransactionError(
                f"Commit failed on pool {_name(pool)}: {summary(exc)}", pool=pool
            )
        return None
    return found(f"{_describe(found, exc)} on pool {_name(pool)}: {summary(exc)}", pool=pool)


def commit_outcome_unknown(pool: str | None, exc: BaseException) -> CommitOutcomeUnknownError:
    """The error for a connection lost once every statement had run: COMMIT may have landed."""
    return CommitOutcomeUnknownError(
        f"Connection lost while committing on pool {_name(pool)}, so whether the transaction "
        f"committed is unknown: {summary(exc)}. It is not retried; check whether the work was "
        "applied (by an idempotency key, say) before repeating it.",
        pool=pool,
    )


def pool_exhausted(
    pool: str | None,
    *,
    size: int,
    checked_out: int,
    overflow: int,
    max_overflow: int,
    waiters: int,
    timeout: float,
    connect_error: BaseException | None,
    max_waiting: int | None = None,
) -> PoolExhaustedError:
    """A :class:`PoolExhaustedError` whose message tells "pool full" from "server down".

    ``max_waiting``: the checkout was refused at once because that many callers
    already waited (the pool's ``MAX_WAITING``), not timed out.
    """
    state = (
        f"(size {size}, checked out {checked_out}, overflow {overflow} of {max_overflow}, "
        f"waiters {waiters})."
    )
    if max_waiting is not None:
        message = (
            f"Pool {_name(pool)} is exhausted and its queue was full: {max_waiting} "
            f"{'caller' if max_waiting == 1 else 'callers'} already waited for a connection, "
            f"the most MAX_WAITING ({max_waiting}) allows, "
            f"so this checkout was refused at once {state}"
        )
    else:
        message = (
            f"Pool {_name(pool)} is exhausted: no connection became free within {timeout:g} s "
            + state
        )
    if connect_error is not None:
        message += (
            " The database itself looks unreachable: the last attempt to open a connection "
            f"failed with: {summary(connect_error)}"
        )
    else:
        message += (
            " Every connection is in use: look for long transactions or leaked sessions, "
            "or raise POOL_SIZE / MAX_OVERFLOW."
        )
    error = PoolExhaustedError(message, pool=pool)
    error.unreachable = connect_error is not None
    return error


def _name(pool: str | None) -> str:
    return f'"{pool}"' if pool else "(unnamed)"


_DESCRIPTIONS: dict[type[SessionError], str] = {
    DeadlockError: "Deadlock detected",
    SerializationError: "Serialization failure",
    LockTimeoutError: "Lock timeout",
    AuthenticationError: "Authentication failed",
    DatabaseUnavailableError: "Database unavailable",
    ConnectionTimeoutError: "Connection attempt timed out",
    PoolExhaustedError: "Pool exhausted",
    ReadOnlyTransactionError: (
        "Write refused in a read-only transaction (a read_only=True scope, a READ_ONLY "
        "pool or a replica: write in a scope without read_only)"
    ),
    CircuitOpenError: "Circuit open",
    DatabaseConnectionError: "Connection failed",
}


def _describe(cls: type[SessionError], exc: BaseException) -> str:
    if issubclass(cls, StatementTimeoutError | TransactionTimeoutError):
        orig = _driver_error(exc)
        code = _code(orig) if orig is not None else None
        setting = _TIMEOUT_SETTINGS.get(code, "timeout") if code is not None else "timeout"
        if cls is StatementTimeoutError:
            return f"Statement cancelled by the server's {setting}"
        return (
            f"Transaction ended by the server's {setting} (nothing was committed; keep "
            "slow work that needs no database outside the scope)"
        )
    return _DESCRIPTIONS.get(cls, "Database error")


def summary(exc: BaseException) -> str:
    """The driver's first line, without SQLAlchemy's statement and parameter echo."""
    orig: Any = _driver_error(exc)
    text = str(orig if orig is not None else exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    return first[:300]
