"""What a failure inside a scope means: translated once, counted once, rolled back safely.

Plain Python over SQLAlchemy, for :mod:`.scopes` and :mod:`.savepoints`.
"""

from __future__ import annotations

import contextlib
import logging

from sqlalchemy import Connection
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session, SessionTransaction

from .breaker import CircuitBreaker, counts_as_failure
from .errors import DatabaseConnectionError, SessionError, TransactionError, TransactionTimeoutError
from .pools import QueueFullError
from .state import state
from .translate import pool_exhausted, translate

__all__ = [
    "close_session",
    "connection_lost",
    "record_failure",
    "refuse_aborted",
    "rollback",
    "transaction_aborted",
    "translated",
]

logger = logging.getLogger("mingus_sessions")


def translated(
    entry_name: str, exc: BaseException, *, at_commit: bool = False
) -> SessionError | None:
    found = translate(exc, entry_name, at_commit=at_commit)
    if found is None or not isinstance(exc, sa_exc.TimeoutError):
        return found
    entry = state.pools.get(entry_name)
    if entry is None:  # pragma: no cover - a scope's pool is built before it can fail
        return found
    pool = entry.engine.pool
    probe = entry.probe
    config = entry.config
    connect_error = probe.recent_connect_error(within=config.timeout + 30.0)
    if connect_error is not None and exc.__cause__ is None:
        # Chain it: the traceback then reads "pool timed out" caused by
        # "could not connect", which is what happened.
        exc.__cause__ = connect_error
    return pool_exhausted(
        entry_name,
        size=config.pool_size,
        checked_out=int(getattr(pool, "checkedout", lambda: 0)()),
        overflow=max(int(getattr(pool, "overflow", lambda: 0)()), 0),
        max_overflow=config.max_overflow,
        waiters=probe.waiting,
        timeout=config.timeout,
        connect_error=connect_error,
        max_waiting=config.max_waiting if isinstance(exc, QueueFullError) else None,
    )


def rollback(session: Session | SessionTransaction, pool: str) -> None:
    """Roll back; if that fails, invalidate the connection rather than return it dirty."""
    try:
        session.rollback()
    except Exception:
        logger.warning(
            "Rollback failed on pool %s; invalidating its connection", pool, exc_info=True
        )
        target = session if isinstance(session, Session) else session.session
        try:
            target.invalidate()
        except Exception:
            logger.debug("Invalidation after a failed rollback also failed", exc_info=True)
    state.sessions.transaction_rollbacks += 1


#: Set on an exception once a breaker has counted it, so that the scopes it
#: passes through on its way out (an enclosing scope, the request's) do not
#: count the same failure again.
_COUNTED = "_mingus_sessions_counted"


def record_failure(breaker: CircuitBreaker | None, exc: BaseException) -> bool:
    """Count ``exc`` against ``breaker`` if it is a new connection failure of its pool.

    Returns whether it counted. A failure of another pool's scope was counted
    by that pool's breaker; passing through this scope says nothing about
    this pool's database.
    """
    if breaker is None or getattr(exc, _COUNTED, False) or not counts_as_failure(exc):
        return False
    pool = exc.pool if isinstance(exc, SessionError) else None
    if pool is not None and pool != breaker.name:
        return False
    breaker.record_failure()
    with contextlib.suppress(AttributeError, TypeError):  # an exception without __dict__
        setattr(exc, _COUNTED, True)
    return True


def connection_lost(exc: BaseException, error: SessionError | None) -> bool:
    if isinstance(error, TransactionTimeoutError):
        # The server ended the transaction itself before closing the
        # connection: it did not commit, whatever became of the connection.
        return False
    return isinstance(error, DatabaseConnectionError) or bool(
        getattr(exc, "connection_invalidated", False)
    )


def refuse_aborted(session: Session, pool: str) -> None:
    """Raise instead of committing a transaction PostgreSQL already aborted.

    A statement error that the code caught leaves the transaction aborted;
    COMMIT would then roll everything back while reporting success.
    """
    connection = session.connection()
    if transaction_aborted(connection):
        state.aborted_connections.discard(connection)
        raise TransactionError(
            f"The transaction on pool {pool!r} was aborted by an earlier database error "
            "that was caught, so nothing can be committed. Let the error end the scope, or "
            "run the statement that may fail in a nested session_scope() (a SAVEPOINT).",
            pool=pool,
        )


#: libpq's PQTRANS_INERROR, as psycopg and psycopg2 both report it.
PQTRANS_INERROR = 3


def transaction_aborted(connection: Connection) -> bool:
    """Whether PostgreSQL has aborted ``connection``'s transaction.

    The ``handle_error`` listener marks a connection whose statement failed
    (free, and nothing is asked of a connection without a mark). A marked one
    may have been repaired since by a ROLLBACK TO SAVEPOINT (a nested scope,
    or the caller's own ``begin_nested()``), so the driver's transaction
    status, which libpq keeps without a round trip, has the last word.
    """
    if connection not in state.aborted_connections:
        return False
    if connection.invalidated:
        return True  # the transaction went with the connection
    try:
        status = connection.connection.dbapi_connection.info.transaction_status  # type: ignore[union-attr]
    except AttributeError:
        return True  # a driver that cannot say: trust the mark
    if int(status) == PQTRANS_INERROR:
        return True
    state.aborted_connections.discard(connection)
    return False


def close_session(session: Session, pool: str) -> None:
    try:
        session.close()
    except Exception:
        logger.warning("Closing a session of pool %s failed; invalidating it", pool, exc_info=True)
        try:
            session.invalidate()
        except Exception:
            logger.debug("Invalidation after a failed close also failed", exc_info=True)
