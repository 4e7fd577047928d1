"""Sessions and scopes: ``get_session``, ``session_scope``, ``current_session``.

The active scopes form a linked list held in a :class:`~contextvars.ContextVar`,
so each thread and each asyncio task sees its own innermost scope, and a scope
entered inside another scope of the same pool becomes a SAVEPOINT on the outer
session instead of a second connection (which, on a pool of one, would wait
forever).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import Token
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, TypeVar, overload

from sqlalchemy import Connection, Engine
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session, SessionTransaction

from . import after_commit, conf
from ._core.breaker import CircuitBreaker, counts_as_failure
from ._core.entry import PoolEntry
from ._core.errors import (
    DatabaseConnectionError,
    SessionError,
    TransactionError,
    TransactionTimeoutError,
)
from ._core.frames import Frame, find
from ._core.frames import active_scope as _active
from ._core.recorder import note_opening
from ._core.state import state
from ._core.translate import commit_outcome_unknown, pool_exhausted, translate
from .breakers import breaker_for
from .engines import get_entry

__all__ = [
    "LazyScope",
    "current_session",
    "get_session",
    "pool_context",
    "session_scope",
    "with_db_session",
]

logger = logging.getLogger("mingus_sessions")

P = ParamSpec("P")
T = TypeVar("T")


def get_session(pool: str | None = None) -> Session:
    """A new :class:`~sqlalchemy.orm.Session` on ``pool``; the caller must close it."""
    return get_entry(pool).sessionmaker()


def current_session(pool: str | None = None) -> Session:
    """The session of the innermost active scope (of ``pool``, if given) in this context."""
    frame = _active.get()
    while frame is not None:
        if pool is None or frame.pool == pool:
            return frame.session
        frame = frame.parent
    where = f' of pool "{pool}"' if pool else ""
    raise SessionError(
        f"No active session{where} in this context: call it inside session_scope(), a request "
        "handled by SessionMiddleware, or a DatabaseTask.",
        pool=pool,
    )


@contextmanager
def pool_context(pool: str) -> Iterator[Engine]:
    """Yield the :class:`~sqlalchemy.Engine` of ``pool`` (``with pool_context("x") as e``)."""
    yield get_entry(pool).engine


def _translated(
    entry_name: str, exc: BaseException, *, at_commit: bool = False
) -> SessionError | None:
    found = translate(exc, entry_name, at_commit=at_commit)
    if found is None or not isinstance(exc, sa_exc.TimeoutError):
        return found
    entry = get_entry(entry_name)
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
    )


def _rollback(session: Session | SessionTransaction, pool: str) -> None:
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


def _record_failure(breaker: CircuitBreaker | None, exc: BaseException) -> bool:
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


def _open_session(
    entry: PoolEntry, frame: Frame, depth: int
) -> tuple[Session, CircuitBreaker | None]:
    """A new session of ``entry``'s pool for ``frame``, admitted by its circuit breaker.

    ``depth`` is how many frames up from here the code that opened the scope
    runs (for leak reports): starting the walk there saves creating a frame
    object for each of this package's frames in between.
    """
    breaker = breaker_for(entry.name)
    trial = breaker.before_call() if breaker is not None else False
    session = entry.sessionmaker()
    if entry.track_sites:
        frame.opened_at = note_opening(sys._getframe(depth))
    if trial:
        # The half-open trial proves the database is back by connecting.
        try:
            session.connection()
        except BaseException as exc:
            session.close()
            error = _translated(entry.name, exc)
            if not _record_failure(breaker, exc if error is None else error):
                # A busy pool or an interrupt proves nothing either way: the
                # next caller gets the trial now, not a recovery timeout later.
                breaker.release_trial()  # type: ignore[union-attr]
            if error is not None:
                raise error from exc
            raise
        breaker.record_success()  # type: ignore[union-attr]
    state.sessions.total_sessions += 1
    state.sessions.active_sessions += 1
    return session, breaker


def _end_session(
    name: str,
    session: Session,
    breaker: CircuitBreaker | None,
    *,
    commit: bool,
    exc: BaseException | None = None,
) -> after_commit.Pending:
    """Commit or roll back, then close; raise the translated failure, if any.

    ``exc`` is the exception that ended the scope (``None`` for a clean exit or
    a rollback the caller decided on, such as a 4xx response). Returns the
    callbacks to run now that the transaction committed: the caller runs them
    once the scope is no longer the active one, so that a callback opening a
    scope of its own gets a transaction of its own. After a rollback, that is
    those of a transaction the scope's code committed itself; if this raises,
    :func:`after_commit.take` still has them for the caller.
    """
    committed: after_commit.Pending = []
    try:
        if commit:
            touched = session.in_transaction()
            flushed = False
            try:
                if state.aborted_connections and touched:
                    _refuse_aborted(session, name)
                # Pending ORM changes first: a failure before this line is a
                # known rollback, one after it may have hit COMMIT in flight.
                session.flush()
                flushed = True
                session.commit()
            except BaseException as commit_exc:
                after_commit.drop_uncommitted(session)
                _rollback(session, name)
                state.sessions.failed_sessions += 1
                error = _translated(name, commit_exc, at_commit=True)
                _record_failure(breaker, commit_exc if error is None else error)
                if flushed and _connection_lost(commit_exc, error):
                    error = commit_outcome_unknown(name, commit_exc)
                if error is not None:
                    raise error from commit_exc
                raise
            committed = after_commit.take(session)
            state.sessions.committed_transactions += 1
            if touched and breaker is not None:
                breaker.record_success()
        else:
            after_commit.drop_uncommitted(session)
            _rollback(session, name)
            if exc is not None:
                state.sessions.failed_sessions += 1
                error = _translated(name, exc)
                _record_failure(breaker, exc if error is None else error)
                if error is not None:
                    raise error from exc
            committed = after_commit.take(session)
    finally:
        _close(session, name)
        state.sessions.active_sessions -= 1
    return committed


def _run_callbacks(
    committed: after_commit.Pending, pool: str, failure: BaseException | None
) -> None:
    """Run callbacks whose transaction committed, once the scope is no longer active.

    With ``failure``, the scope is failing (after its code committed once):
    that failure goes on, and a callback's failure becomes a note on it.
    """
    if not committed:
        return
    if failure is None:
        after_commit.run(committed, pool)
    else:
        after_commit.run_despite(committed, pool, failure)


def _connection_lost(exc: BaseException, error: SessionError | None) -> bool:
    if isinstance(error, TransactionTimeoutError):
        # The server ended the transaction itself before closing the
        # connection: it did not commit, whatever became of the connection.
        return False
    return isinstance(error, DatabaseConnectionError) or bool(
        getattr(exc, "connection_invalidated", False)
    )


def _refuse_aborted(session: Session, pool: str) -> None:
    """Raise instead of committing a transaction PostgreSQL already aborted.

    A statement error that the code caught leaves the transaction aborted;
    COMMIT would then roll everything back while reporting success.
    """
    connection = session.connection()
    if _transaction_aborted(connection):
        state.aborted_connections.discard(connection)
        raise TransactionError(
            f"The transaction on pool {pool!r} was aborted by an earlier database error "
            "that was caught, so nothing can be committed. Let the error end the scope, or "
            "run the statement that may fail in a nested session_scope() (a SAVEPOINT).",
            pool=pool,
        )


#: libpq's PQTRANS_INERROR, as psycopg and psycopg2 both report it.
_PQTRANS_INERROR = 3


def _transaction_aborted(connection: Connection) -> bool:
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
    if int(status) == _PQTRANS_INERROR:
        return True
    state.aborted_connections.discard(connection)
    return False


def _end_savepoint(
    name: str,
    savepoint: SessionTransaction,
    *,
    commit: bool,
    exc: BaseException | None = None,
) -> None:
    """Release or roll back a savepoint; raise the translated failure, if any."""
    if commit:
        if _failed_inside(savepoint):
            # A database error inside the savepoint was caught: RELEASE would
            # fail (and on PostgreSQL leave the outer transaction aborted).
            # Roll back to the savepoint instead, so that the outer
            # transaction can go on, and say why its work is gone.
            after_commit.discard_savepoint(savepoint.session, savepoint)
            _roll_back_savepoint(savepoint, name)
            state.sessions.failed_sessions += 1
            raise TransactionError(
                f"The savepoint on pool {name!r} was aborted by an earlier database error "
                "that was caught, so its work was rolled back; the outer transaction goes on. "
                "Let the error end the inner scope, or nest the statement that may fail in "
                "a session_scope() of its own.",
                pool=name,
            )
        try:
            savepoint.commit()
        except Exception as commit_exc:
            after_commit.discard_savepoint(savepoint.session, savepoint)
            _roll_back_savepoint(savepoint, name)
            state.sessions.failed_sessions += 1
            error = _translated(name, commit_exc, at_commit=True)
            if error is not None:
                raise error from commit_exc
            raise
        return
    after_commit.discard_savepoint(savepoint.session, savepoint)
    _roll_back_savepoint(savepoint, name)
    if exc is None:
        return
    state.sessions.failed_sessions += 1
    error = _translated(name, exc)
    if error is not None:
        raise error from exc


def _failed_inside(savepoint: SessionTransaction) -> bool:
    """Whether a database error the scope's code caught has spoilt ``savepoint``.

    A caught flush failure leaves it open but deactivated (on every
    database); a caught statement failure leaves PostgreSQL's transaction
    aborted, which the driver reports.
    """
    if not savepoint.is_active:
        return _still_open(savepoint)
    return bool(state.aborted_connections) and _transaction_aborted(savepoint.session.connection())


def _still_open(savepoint: SessionTransaction) -> bool:
    """Whether ``savepoint`` is still one of its session's open transactions."""
    open_transaction = savepoint.session.get_nested_transaction()
    while open_transaction is not None and open_transaction is not savepoint:
        open_transaction = open_transaction.parent
    return open_transaction is not None


def _roll_back_savepoint(savepoint: SessionTransaction, pool: str) -> None:
    """Roll back ``savepoint`` if it is still open, whatever state a failure left it in.

    A failed flush leaves the savepoint deactivated and a failed RELEASE leaves
    it prepared: neither is ``is_active``, yet the outer transaction can go on
    only once the savepoint is rolled back. One that is already closed (the
    caller rolled it back, or its outer transaction ended) is left alone.
    """
    if _still_open(savepoint):
        _rollback(savepoint, pool)


def _begin_savepoint(session: Session) -> SessionTransaction:
    """Begin a SAVEPOINT on ``session``; on Django's connection, emit it now.

    SQLAlchemy emits SAVEPOINT before its own first statement in it, which is
    enough where the session has a connection of its own. A joined session
    shares Django's connection: ORM writes made in the scope before any
    SQLAlchemy statement must already be inside the savepoint.
    """
    savepoint = session.begin_nested()
    if after_commit.JOINED in session.info:
        try:
            session.connection()
        except BaseException:
            if _still_open(savepoint):
                savepoint.rollback()  # never emitted: ends SQLAlchemy's side only
            raise
    return savepoint


class LazyScope(Frame):
    """A scope whose session opens on first use: the request's and the task's.

    It is its own frame. :meth:`activate` makes it the innermost scope of its
    pool in this context (so ``current_session()`` and nested
    ``session_scope()`` find it) without checking out a connection; the
    session is opened when something first asks for it. :meth:`finish` commits
    or rolls back and closes, if it was opened.
    """

    _breaker: CircuitBreaker | None = None
    _savepoint: SessionTransaction | None = None
    _finished: bool = False

    def __init__(self, pool: str | None = None) -> None:
        self.pool = pool if pool is not None else conf.get_config().default_pool

    def _open(self) -> Session:
        # Inside an active scope of the same pool (a request served in-process
        # by a test holding ``sa_session``, an eager task called in a scope),
        # this scope is a SAVEPOINT on that session, as a nested scope is.
        name = self.pool
        outer = self._enclosing()
        if outer is not None:
            session = outer.session
            self._savepoint = _begin_savepoint(session)
            state.sessions.savepoints += 1
        else:
            # Called by the ``session`` property: the opener is three frames up.
            session, self._breaker = _open_session(get_entry(name), self, 3)
        early = self.early
        if early:
            after_commit.adopt(session, early)
            self.early = None
        return session

    def _enclosing(self) -> Frame | None:
        """The next scope out of the same pool, which this one is a savepoint of."""
        outer = self.parent
        while outer is not None and outer.pool != self.pool:
            outer = outer.parent
        return outer

    @property
    def has_work(self) -> bool:
        """Whether :meth:`finish` has anything to do: a session, or on_commit callbacks."""
        return self._session is not None or bool(self.early)

    @property
    def session(self) -> Session:
        """The scope's session, opened now if it was not yet."""
        session = self._session
        if session is None:
            session = self._session = self._open()
        return session

    def activate(self) -> Token[Frame | None]:
        """Make this the innermost scope of its pool here; pass the token to deactivate()."""
        self.parent = _active.get()
        return _active.set(self)

    @staticmethod
    def deactivate(token: Token[Frame | None]) -> None:
        _active.reset(token)

    def finish(self, *, commit: bool, exc: BaseException | None = None) -> None:
        """Commit (``commit=True``) or roll back, and close; nothing if never opened."""
        session = self._session
        if session is None:
            early = self.early
            if early and commit:
                self.early = None
                outer = self._enclosing()
                if outer is None:
                    # Nothing to commit: the callbacks' transaction trivially succeeded.
                    after_commit.run([(callback, ()) for callback in early], self.pool)
                else:
                    # Had it opened, this scope would have been a savepoint of
                    # the outer one: its callbacks wait for that transaction.
                    for callback in early:
                        after_commit.register(outer, callback)
            return
        if self._finished:  # a response may be closed twice: finish once
            return
        self._finished = True
        savepoint = self._savepoint
        if savepoint is not None:
            self._savepoint = None
            _end_savepoint(self.pool, savepoint, commit=commit, exc=exc)
            return
        try:
            committed = _end_session(self.pool, session, self._breaker, commit=commit, exc=exc)
        except BaseException as failure:
            _run_callbacks(after_commit.take(session), self.pool, failure)
            raise
        if committed:
            _run_callbacks(committed, self.pool, exc)


class _Scope:
    """The context manager behind :func:`session_scope`."""

    __slots__ = (
        "_atomic",
        "_breaker",
        "_independent",
        "_join",
        "_name",
        "_pool",
        "_savepoint",
        "_session",
        "_token",
    )

    def __init__(self, pool: str | None, independent: bool, join_django: bool) -> None:
        self._pool = pool
        self._independent = independent
        self._join = join_django
        self._savepoint: SessionTransaction | None = None
        self._breaker: CircuitBreaker | None = None
        self._atomic: Any = None
        self._token: Token[Frame | None] | None = None

    def __enter__(self) -> Session:
        name = self._pool if self._pool is not None else conf.get_config().default_pool
        self._name = name
        if not self._independent:
            outer = find(name, joined_only=self._join)
            if outer is not None:
                return self._enter_savepoint(outer.session)
        frame = Frame(name, None, _active.get(), self._join)
        if self._join:
            from .joined import open_joined

            session, self._atomic, self._savepoint = open_joined(get_entry(name))
            state.sessions.total_sessions += 1
            state.sessions.active_sessions += 1
        else:
            # The code that opened the scope is two frames up (``with`` calls __enter__).
            session, self._breaker = _open_session(get_entry(name), frame, 2)
        frame._session = session
        self._session = session
        self._token = _active.set(frame)
        return session

    def _enter_savepoint(self, session: Session) -> Session:
        try:
            self._savepoint = _begin_savepoint(session)
        except Exception as exc:
            error = _translated(self._name, exc)
            if error is not None:
                raise error from exc
            raise
        state.sessions.savepoints += 1
        self._session = session
        return session

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._token is None:
            self._exit_savepoint(exc)
            return
        if self._join:
            self._exit_joined(exc_type, exc, tb)
            return
        try:
            committed = _end_session(
                self._name, self._session, self._breaker, commit=exc is None, exc=exc
            )
        except BaseException as failure:
            _active.reset(self._token)
            _run_callbacks(after_commit.take(self._session), self._name, failure)
            raise
        _active.reset(self._token)
        if committed:
            # After close and out of the scope: a slow publish must not hold
            # the connection, and a callback's own scope must be a new one.
            _run_callbacks(committed, self._name, exc)

    def _exit_savepoint(self, exc: BaseException | None) -> None:
        assert self._savepoint is not None
        _end_savepoint(self._name, self._savepoint, commit=exc is None, exc=exc)

    def _exit_joined(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        from .joined import close_joined

        try:
            close_joined(self._session, self._savepoint, self._atomic, exc_type, exc, tb)
            if exc is None:
                state.sessions.committed_transactions += 1
            else:
                state.sessions.transaction_rollbacks += 1
                state.sessions.failed_sessions += 1
        finally:
            if self._token is not None:
                _active.reset(self._token)
            state.sessions.active_sessions -= 1
        if exc is not None:
            error = _translated(self._name, exc)
            if error is not None:
                raise error from exc


def _close(session: Session, pool: str) -> None:
    try:
        session.close()
    except Exception:
        logger.warning("Closing a session of pool %s failed; invalidating it", pool, exc_info=True)
        try:
            session.invalidate()
        except Exception:
            logger.debug("Invalidation after a failed close also failed", exc_info=True)


def session_scope(
    pool: str | None = None, *, independent: bool = False, join_django: bool = False
) -> _Scope:
    """A transactional scope: commit on success, roll back on any exception, always close.

    Inside an active scope of the same pool it is a SAVEPOINT on the same
    session: an inner failure rolls back the inner work only. ``independent``
    opens a separate session and transaction instead. ``join_django`` runs the
    session on Django's own connection for the pool's database, inside Django's
    current transaction (opening an ``atomic`` block if there is none).
    """
    return _Scope(pool, independent, join_django)


@overload
def with_db_session(func: Callable[Concatenate[Session, P], T], /) -> Callable[P, T]: ...


@overload
def with_db_session(
    pool: str | None = None,
) -> Callable[[Callable[..., T]], Callable[..., T]]: ...


def with_db_session(pool: Any = None) -> Any:
    """Decorator: run the function in a :func:`session_scope`, passing ``session=``."""
    return _session_decorator(pool, lambda chosen: chosen)


def _session_decorator(pool: Any, resolve: Callable[[str | None], str | None]) -> Any:
    """The decorator behind ``with_db_session`` and ``with_celery_db_session``.

    Usable bare (``@decorator``) or called with a pool name; ``resolve`` turns
    the given name into the pool to use, at call time (settings are never read
    when the decorator is applied).
    """

    def decorate(fn: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> T:
            with session_scope(resolve(chosen)) as session:
                return fn(*args, session=session, **kwargs)

        return wrapper

    if callable(pool):
        chosen = None
        return decorate(pool)
    chosen = pool
    return decorate
