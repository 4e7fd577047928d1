"""Sessions and scopes: ``get_session``, ``session_scope``, ``current_session``.

The active scopes form a linked list held in a :class:`~contextvars.ContextVar`
(:mod:`mingus_sessions._core.frames`), so each thread and each asyncio task
sees its own innermost scope, and a scope entered inside another scope of the
same pool becomes a SAVEPOINT on the outer session instead of a second
connection (which, on a pool of one, would wait forever). This module opens
scopes; every scope ends through :func:`mingus_sessions._core.scopes.end_scope`.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import Token
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, TypeVar, overload

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from . import conf
from ._core import callbacks
from ._core.breaker import CircuitBreaker
from ._core.entry import PoolEntry
from ._core.errors import SessionError
from ._core.failures import record_failure, translated
from ._core.frames import Frame, active_scope, enter, find
from ._core.leaks import note_opening
from ._core.replicas import parse_lsn
from ._core.savepoints import begin_savepoint
from ._core.scopes import end_scope
from ._core.state import state
from .breakers import breaker_for
from .engines import get_entry
from .joined import open_joined
from .replicas import open_read_only_session

__all__ = [
    "LazyScope",
    "current_session",
    "get_session",
    "pool_context",
    "session_scope",
    "with_db_session",
]

P = ParamSpec("P")
T = TypeVar("T")


def get_session(pool: str | None = None) -> Session:
    """A new :class:`~sqlalchemy.orm.Session` on ``pool``; the caller must close it."""
    return get_entry(pool).sessionmaker()


def current_session(pool: str | None = None) -> Session:
    """The session of the innermost active scope (of ``pool``, if given) in this context."""
    frame = active_scope.get()
    while frame is not None:
        if (pool is None or frame.pool == pool) and not frame.is_async and not frame.finished:
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


def _open_session(
    entry: PoolEntry, frame: Frame, depth: int, maker: sessionmaker[Session] | None = None
) -> Session:
    """A new session of ``entry``'s pool for ``frame``, admitted by its circuit breaker.

    ``depth`` is how many frames up from here the code that opened the scope
    runs (for leak reports): starting the walk there saves creating a frame
    object for each of this package's frames in between. ``maker``: the
    sessionmaker to use instead of the pool's own (read-only sessions).
    """
    breaker = breaker_for(entry.name)
    trial = breaker.before_call() if breaker is not None else False
    session = entry.sessionmaker() if maker is None else maker()
    if entry.track_sites:
        frame.opened_at = note_opening(sys._getframe(depth))
    if trial:
        # The half-open trial proves the database is back by connecting.
        try:
            session.connection()
        except BaseException as exc:
            session.close()
            error = trial_failed(breaker, entry.name, exc)  # type: ignore[arg-type]
            if error is not None:
                raise error from exc
            raise
        breaker.record_success()  # type: ignore[union-attr]
    frame.breaker = breaker
    if entry.start_trace is not None:
        frame.trace = entry.start_trace()
    state.sessions.total_sessions += 1
    state.sessions.active_sessions += 1
    return session


def trial_failed(breaker: CircuitBreaker, pool: str, exc: BaseException) -> SessionError | None:
    """Tell ``breaker`` that its half-open trial failed with ``exc``; return its translation."""
    error = translated(pool, exc)
    if not record_failure(breaker, exc if error is None else error):
        # A busy pool or an interrupt proves nothing either way: the next
        # caller gets the trial now, not a recovery timeout later.
        breaker.release_trial()
    return error


def _begin_nested(name: str, frame: Frame, session: Session) -> Session:
    """Make ``frame`` a SAVEPOINT on ``session``, an outer scope's session of pool ``name``."""
    try:
        frame.savepoint = begin_savepoint(session)
    except Exception as exc:
        error = translated(name, exc)
        if error is not None:
            raise error from exc
        raise
    state.sessions.savepoints += 1
    return session


class LazyScope(Frame):
    """A scope whose session opens on first use: the request's and the task's.

    It is its own frame. :meth:`activate` makes it the innermost scope of its
    pool in this context (so ``current_session()`` and nested
    ``session_scope()`` find it) without checking out a connection; the
    session is opened when something first asks for it. :meth:`finish` ends
    it through :func:`~mingus_sessions._core.scopes.end_scope`, as every scope.
    """

    def __init__(self, pool: str | None = None) -> None:
        self.pool = pool if pool is not None else conf.get_config().default_pool

    def _open(self) -> Session:
        # Inside an active scope of the same pool (a request served in-process
        # by a test holding ``sa_session``, an eager task called in a scope),
        # this scope is a SAVEPOINT on that session, as a nested scope is.
        name = self.pool
        outer = self.parent
        while outer is not None and (outer.pool != name or outer.is_async or outer.finished):
            outer = outer.parent
        if outer is not None:
            session = _begin_nested(name, self, outer.session)
        else:
            # Called by the ``session`` property: the opener is three frames up.
            session = _open_session(get_entry(name), self, 3)
        early = self.early
        if early:
            callbacks.adopt(session, early)
            self.early = None
        return session

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
        self.parent = active_scope.get()
        return enter(self)

    @staticmethod
    def deactivate(token: Token[Frame | None]) -> None:
        active_scope.reset(token)

    def finish(self, *, commit: bool, exc: BaseException | None = None) -> None:
        """Commit (``commit=True``) or roll back, and close; nothing if never opened."""
        end_scope(self, commit=commit, exc=exc)


class _Scope:
    """The context manager behind :func:`session_scope`: opens a frame, and ends it."""

    __slots__ = ("_after", "_frame", "_independent", "_join", "_pool", "_read_only", "_token")

    def __init__(
        self,
        pool: str | None,
        independent: bool,
        join_django: bool,
        read_only: bool = False,
        after: str | None = None,
    ) -> None:
        self._pool = pool
        self._independent = independent
        self._join = join_django
        self._read_only = read_only
        self._after = after

    def __enter__(self) -> Session:
        name = self._pool if self._pool is not None else conf.get_config().default_pool
        frame = self._frame = Frame(name, active_scope.get())
        outer = None if self._independent else find(name, joined_only=self._join)
        if outer is not None:
            session = _begin_nested(name, frame, outer.session)
            frame.read_only = outer.read_only
        elif self._join:
            session, frame.release, frame.savepoint = open_joined(get_entry(name))
            frame.joined = True
            state.sessions.total_sessions += 1
            state.sessions.active_sessions += 1
        elif self._read_only:
            session = open_read_only_session(name, frame, self._after, _open_session, 2)
        else:
            # The code that opened the scope is two frames up (``with`` calls __enter__).
            session = _open_session(get_entry(name), frame, 2)
        frame._session = session
        self._token = enter(frame)
        return session

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        end_scope(self._frame, commit=exc is None, exc=exc, token=self._token)


def check_read_only_arguments(read_only: bool, after: str | None, join_django: bool) -> None:
    """Refuse combinations of ``read_only``, ``after`` and ``join_django`` that cannot hold."""
    if after is not None:
        if not read_only:
            raise ValueError(
                "after= applies to read-only scopes: pass read_only=True with it "
                "(a scope that may write always runs on the primary)."
            )
        parse_lsn(after)
    if read_only and join_django:
        raise ValueError(
            "read_only=True and join_django=True cannot be combined: a joined scope runs "
            "in Django's transaction on the primary. Use one or the other."
        )


def session_scope(
    pool: str | None = None,
    *,
    independent: bool = False,
    join_django: bool = False,
    read_only: bool = False,
    after: str | None = None,
) -> _Scope:
    """A transactional scope: commit on success, roll back on any exception, always close.

    Inside an active scope of the same pool it is a SAVEPOINT on the same
    session: an inner failure rolls back the inner work only. ``independent``
    opens a separate session and transaction instead. ``join_django`` runs the
    session on Django's own connection for the pool's database, inside Django's
    current transaction (opening an ``atomic`` block if there is none).

    ``read_only`` runs a read-only transaction, on one of the pool's
    ``REPLICAS`` that is eligible (reachable, within ``MAX_REPLICA_LAG``, and
    has replayed this context's last commit on the primary, and ``after``'s:
    a :func:`~mingus_sessions.last_commit_token` from another process), else
    on the primary. A write in it fails.
    """
    if read_only or after is not None:
        check_read_only_arguments(read_only, after, join_django)
        return _Scope(pool, independent, join_django, read_only, after)
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
