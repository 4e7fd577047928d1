"""The error taxonomy.

Every error carries ``.pool`` (the pool's name, or ``None``), ``.transient``
(whether retrying the whole transaction may succeed) and the original exception
as ``__cause__``. Data errors (``IntegrityError``, ``DataError``,
``ProgrammingError``) are not translated: callers get them as SQLAlchemy raised
them. :mod:`mingus_sessions.translate` decides which class a driver failure
becomes.
"""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured

__all__ = [
    "AfterCommitError",
    "AuthenticationError",
    "CircuitOpenError",
    "CommitOutcomeUnknownError",
    "ConcurrentSessionUseError",
    "ConfigurationError",
    "ConnectionError",
    "ConnectionTimeoutError",
    "DatabaseConnectionError",
    "DatabaseUnavailableError",
    "DeadlockError",
    "LockTimeoutError",
    "PoolExhaustedError",
    "ReadOnlyTransactionError",
    "SerializationError",
    "SessionError",
    "StatementTimeoutError",
    "TransactionError",
    "TransactionTimeoutError",
]


class SessionError(Exception):
    """Base class of every error this package raises."""

    transient: bool = False

    def __init__(self, message: str, *, pool: str | None = None) -> None:
        super().__init__(message)
        self.pool = pool

    def __reduce__(self) -> tuple[object, ...]:
        # Keep the keyword-only ``pool`` when the error crosses a process
        # boundary (Celery results, multiprocessing).
        return (_rebuild, (type(self), str(self), self.pool))


def _rebuild(cls: type[SessionError], message: str, pool: str | None) -> SessionError:
    return cls(message, pool=pool)


class ConfigurationError(SessionError, ImproperlyConfigured):
    """``MINGUS_SESSIONS``, ``DATABASES`` or an environment variable is invalid."""


class ConcurrentSessionUseError(SessionError):
    """An ``AsyncSession`` was used by a second asyncio task while the first was still using it.

    A session is one transaction on one connection: statements from two tasks
    at once would interleave on it. Open a scope per task instead.
    """


class AfterCommitError(SessionError):
    """The transaction committed, but work registered to run after it failed.

    The commit stands; ``__cause__`` is the callback's own exception (a broker
    that refused a publish, say). Never transient: retrying would repeat the
    committed work.
    """


class TransactionError(SessionError):
    """A transaction could not be committed or rolled back."""


class CommitOutcomeUnknownError(TransactionError):
    """The connection was lost while COMMIT was in flight: it may or may not have committed.

    Every statement had run; the server may have committed before the
    connection broke, or rolled back. Never transient: retrying could apply the
    work twice. ``__cause__`` is the driver's error; check (an idempotency key,
    say) before repeating the work.
    """


class DeadlockError(TransactionError):
    """The database chose this transaction as a deadlock victim."""

    transient = True


class SerializationError(TransactionError):
    """A serializable transaction could not be serialized."""

    transient = True


class LockTimeoutError(TransactionError):
    """A lock could not be taken in time (or the database file is locked)."""

    transient = True


class ReadOnlyTransactionError(TransactionError):
    """A write in a read-only transaction.

    ``session_scope(read_only=True)`` (on a replica or on the primary), a
    ``READ_ONLY`` pool, or a replica's pool. Not transient (the same write
    would be refused again) and not a database outage: write in a scope
    without ``read_only``.
    """


class StatementTimeoutError(TransactionError):
    """The server cancelled a statement that ran longer than its time limit.

    PostgreSQL's ``statement_timeout``, MariaDB's ``max_statement_time``,
    MySQL's ``max_execution_time``. The database is healthy: the statement was
    too slow, so the circuit breaker does not count it, and it is not
    transient (the same statement would run as long again).
    """


class TransactionTimeoutError(TransactionError):
    """The server ended the transaction, and its connection, after one of its timeouts.

    PostgreSQL's ``idle_in_transaction_session_timeout`` (the scope's code kept
    the transaction open without using it for too long) or ``transaction_timeout``.
    Nothing of the transaction was committed. The failure is the application's,
    not the database's: the circuit breaker does not count it, and it is not
    transient.
    """


class DatabaseConnectionError(SessionError):
    """No usable connection: the database, the network or the pool failed."""

    transient = True


class PoolExhaustedError(DatabaseConnectionError):
    """Every connection of the pool stayed checked out for the pool's timeout.

    ``unreachable`` is True when the last attempt to open a connection had
    failed too: the pool is empty because the database is down, not because it
    is busy. Only then does it count against the circuit breaker.
    """

    unreachable: bool = False


class ConnectionTimeoutError(DatabaseConnectionError):
    """Opening a connection took longer than its ``connect_timeout``."""


class AuthenticationError(DatabaseConnectionError):
    """The server refused the credentials."""

    transient = False


class DatabaseUnavailableError(DatabaseConnectionError):
    """The server refused the connection, dropped it or is shutting down."""


class CircuitOpenError(DatabaseConnectionError):
    """The pool's circuit breaker is open: the call failed fast, nothing was tried."""

    transient = False


#: The seeds' name for :class:`DatabaseConnectionError`. Import it from this
#: module explicitly; it shadows the builtin only where it is imported.
ConnectionError = DatabaseConnectionError
