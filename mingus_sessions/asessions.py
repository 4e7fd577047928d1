"""Async sessions: ``asession_scope``, ``get_async_session``, ``current_async_session``.

The async scope is the sync scope run through SQLAlchemy's asyncio bridge: an
``AsyncSession`` wraps a sync ``Session``, and the scope's frame holds that
sync session, so the scope ends through the one way out of every scope
(:func:`mingus_sessions._core.scopes.end_scope`), run inside SQLAlchemy's
greenlet. Commit, rollback, savepoints, error translation, the breaker and
on_commit callbacks are therefore the sync side's, not a copy of them.

Ending a scope is shielded from cancellation: a client that goes away while
its request's scope commits or rolls back cancels the request, not the
rollback, so the connection goes back to the pool clean and no half-ended
transaction is left "idle in transaction". The cancelled caller still sees
its ``CancelledError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sys
from collections.abc import Awaitable, Callable
from contextvars import Token
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.util import greenlet_spawn

from . import conf
from ._core import callbacks
from ._core.errors import DatabaseConnectionError, SessionError
from ._core.failures import record_failure, translated
from ._core.frames import Frame, active_scope, enter, find, leave
from ._core.guarded_session import GuardedAsyncSession
from ._core.leaks import note_opening
from ._core.replicas import (
    Positions,
    adopt_positions,
    context_positions,
    parse_lsn,
    pinned_to_primary,
)
from ._core.savepoints import begin_savepoint
from ._core.scopes import end_scope
from ._core.state import state
from .async_engines import async_read_only_sessionmaker, get_async_entry
from .breakers import breaker_for
from .replicas import REPLAY_SQL, required_position, router_for
from .request_session import request_pool
from .sessions import check_read_only_arguments, trial_failed

__all__ = [
    "AsyncRequestSession",
    "asession_scope",
    "current_async_session",
    "get_async_session",
    "with_async_db_session",
]

logger = logging.getLogger("mingus_sessions")

P = ParamSpec("P")
T = TypeVar("T")


def get_async_session(pool: str | None = None) -> AsyncSession:
    """A new :class:`~sqlalchemy.ext.asyncio.AsyncSession` on ``pool``; the caller must close it."""
    return get_async_entry(pool).sessionmaker()


def current_async_session(pool: str | None = None) -> AsyncSession:
    """The session of the innermost active async scope (of ``pool``, if given) in this task."""
    frame = active_scope.get()
    while frame is not None:
        if frame.is_async and (pool is None or frame.pool == pool) and not frame.finished:
            return frame.async_session  # type: ignore[no-any-return]
        frame = frame.parent
    where = f' of pool "{pool}"' if pool else ""
    raise SessionError(
        f"No active async session{where} in this task: call it inside asession_scope(), an "
        "async view served by SessionMiddleware, or with_async_db_session.",
        pool=pool,
    )


async def _open_async_session(
    name: str, frame: Frame, read_only: bool = False, depth: int = 2
) -> AsyncSession:
    """A new async session of pool ``name`` for ``frame``, admitted by its circuit breaker.

    ``read_only``: a session whose transactions refuse writes.
    """
    entry = get_async_entry(name)
    breaker = breaker_for(name)
    trial = breaker.before_call() if breaker is not None else False
    session = async_read_only_sessionmaker(entry)() if read_only else entry.sessionmaker()
    if entry.base.track_sites:
        # This coroutine, then __aenter__, then the code that opened the scope.
        frame.opened_at = note_opening(sys._getframe(depth))
    if trial:
        # The half-open trial proves the database is back by connecting.
        try:
            await session.connection()
        except BaseException as exc:
            await asyncio.shield(session.close())
            error = trial_failed(breaker, name, exc)  # type: ignore[arg-type]
            if error is not None:
                raise error from exc
            raise
        breaker.record_success()  # type: ignore[union-attr]
    frame.breaker = breaker
    if entry.base.start_trace is not None:
        frame.trace = entry.base.start_trace()
    state.sessions.total_sessions += 1
    state.sessions.active_sessions += 1
    return session


async def _begin_nested(name: str, frame: Frame, session: AsyncSession) -> None:
    """Make ``frame`` a SAVEPOINT on ``session``, an outer async scope's session."""
    try:
        frame.savepoint = await greenlet_spawn(begin_savepoint, session.sync_session)
    except Exception as exc:
        error = translated(name, exc)
        if error is not None:
            raise error from exc
        raise
    state.sessions.savepoints += 1


def _start_ending(frame: Frame, commit: bool, exc: BaseException | None) -> asyncio.Task[Positions]:
    """End ``frame`` in a task of its own, which a cancellation of the caller does not stop.

    The task runs in a copy of the caller's context, where the scope is made
    no longer the active one first: its on_commit callbacks, which
    ``end_scope`` runs after the commit, then open scopes of their own. It
    first waits for any other task still inside a method of the session, and
    holds the session while it ends it: a commit never runs under another
    task's statement.
    """

    async def ending() -> Positions:
        active_scope.set(frame.parent)
        # (A lazy scope that never opened has no session to hold: do not open one.)
        session = frame.async_session if frame.opened else None
        if not isinstance(session, GuardedAsyncSession):
            await greenlet_spawn(end_scope, frame, commit=commit, exc=exc)
            return context_positions()
        await session.claim()
        try:
            await greenlet_spawn(end_scope, frame, commit=commit, exc=exc)
        finally:
            session._release()
        # What a commit on a primary with replicas remembered, in this task's
        # copy of the context: the caller adopts it (read-your-writes).
        return context_positions()

    return asyncio.ensure_future(ending())


async def end_async_scope(
    frame: Frame, *, commit: bool, exc: BaseException | None, token: Token[Frame | None] | None
) -> None:
    """End an async scope's frame (see :func:`_start_ending`), then leave the context.

    A caller cancelled while its scope ends still waits for the end, then gets
    its ``CancelledError``: an outer scope's end (or the middleware's) must
    not touch the session while this one is still ending it.
    """
    ending = _start_ending(frame, commit, exc)
    try:
        adopt_positions(await asyncio.shield(ending))
    except asyncio.CancelledError:
        while not ending.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(ending)
        if not ending.cancelled() and ending.exception() is not None:
            # Its caller is gone: nobody else will see how the end failed.
            logger.warning(
                "An async scope of a cancelled task failed to end", exc_info=ending.exception()
            )
        raise
    finally:
        if token is not None:
            # An async generator abandoned inside a scope is finalized by the
            # loop in another context: there is nothing of ours to leave there.
            with contextlib.suppress(ValueError):
                leave(token)


class _AsyncScope:
    """The async context manager behind :func:`asession_scope`."""

    __slots__ = ("_after", "_frame", "_independent", "_pool", "_read_only", "_token")

    def __init__(
        self, pool: str | None, independent: bool, read_only: bool = False, after: str | None = None
    ) -> None:
        self._pool = pool
        self._independent = independent
        self._read_only = read_only
        self._after = after

    async def __aenter__(self) -> AsyncSession:
        name = self._pool if self._pool is not None else conf.get_config().default_pool
        frame = self._frame = Frame(name, active_scope.get())
        outer = None if self._independent else find(name, asynchronous=True)
        if outer is not None:
            session: AsyncSession = outer.async_session
            await _begin_nested(name, frame, session)
            frame.read_only = outer.read_only
        elif self._read_only:
            session = await _open_async_read_only(name, frame, self._after)
        else:
            session = await _open_async_session(name, frame)
        frame._session = session.sync_session
        frame.is_async = True
        frame.async_session = session
        self._token = enter(frame)
        return session

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await end_async_scope(self._frame, commit=exc is None, exc=exc, token=self._token)


def asession_scope(
    pool: str | None = None,
    *,
    independent: bool = False,
    read_only: bool = False,
    after: str | None = None,
) -> _AsyncScope:
    """An async transactional scope: commit on success, roll back on any exception, always close.

    ``async with asession_scope() as session:`` gives an ``AsyncSession``.
    Inside an active async scope of the same pool it is a SAVEPOINT on that
    session; ``independent`` opens a separate session and transaction
    instead. A ``CancelledError`` rolls back like any other exception, and the
    rollback itself is not cancelled. ``read_only`` and ``after`` route the
    read as :func:`~mingus_sessions.session_scope` does.
    """
    if read_only or after is not None:
        check_read_only_arguments(read_only, after, join_django=False)
        return _AsyncScope(pool, independent, read_only, after)
    return _AsyncScope(pool, independent)


async def _open_async_read_only(name: str, frame: Frame, after: str | None) -> AsyncSession:
    """A read-only async session of ``name``: on an eligible replica, else the primary."""
    position = required_position(name, after)
    frame.read_only = True
    router = router_for(name)
    if router is not None and not pinned_to_primary(name):
        for replica, check in router.candidates(position):
            session = await _try_async_replica(router, replica, frame, position if check else None)
            if session is not None:
                frame.replica = replica
                return session
    return await _open_async_session(name, frame, read_only=True, depth=3)


async def _try_async_replica(
    router: Any, replica: str, frame: Frame, position: int | None
) -> AsyncSession | None:
    """An async session on ``replica``, connected (and caught up to ``position``), or None."""
    try:
        session = await _open_async_session(replica, frame, depth=4)
    except DatabaseConnectionError:
        return None  # its breaker is open, or its half-open trial failed
    try:
        connection = await session.connection()
        if position is not None:
            replayed = parse_lsn((await connection.exec_driver_sql(REPLAY_SQL)).scalar_one())
            router.saw_replay(replica, replayed)
            if replayed < position:
                await _abandon_async(session, frame)
                return None
    except Exception as exc:
        await _abandon_async(session, frame)
        error = translated(replica, exc)
        if isinstance(error, DatabaseConnectionError):
            record_failure(breaker_for(replica), error)
            return None
        if error is not None:
            raise error from exc
        raise
    return session


async def _abandon_async(session: AsyncSession, frame: Frame) -> None:
    """Close a replica's session that will not serve the scope, and uncount it."""
    if frame.trace is not None:
        frame.trace.end(None)
        frame.trace = None
    await asyncio.shield(session.close())
    state.sessions.total_sessions -= 1
    state.sessions.active_sessions -= 1


def with_async_db_session(pool: Any = None) -> Any:
    """Decorator for coroutine functions: run each call in an :func:`asession_scope`.

    The session is passed as ``session=``. Usable bare (``@with_async_db_session``)
    or with a pool name (``@with_async_db_session("analytics")``).
    """

    def decorate(fn: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
        if not asyncio.iscoroutinefunction(fn):
            raise TypeError(
                f"with_async_db_session decorates coroutine functions (async def); "
                f"{fn.__qualname__} is not one: use with_db_session."
            )

        @functools.wraps(fn)
        async def wrapper(*args: Any, **kwargs: Any) -> T:
            async with asession_scope(chosen) as session:
                return await fn(*args, session=session, **kwargs)

        return wrapper

    if callable(pool):
        chosen = None
        return decorate(pool)
    chosen = pool
    return decorate


class AsyncRequestSession(Frame):
    """``request.adb_session``: a request's async scope, standing in for its ``AsyncSession``.

    Made by the middleware for every request served under ASGI, it costs one
    small object until something uses it: reading an attribute
    (``await request.adb_session.execute(...)``), ``current_async_session()``
    or a nested ``asession_scope()`` opens the session, without connecting
    (the first statement checks a connection out). The middleware ends it
    through the one way out of a scope before it returns the response.
    """

    is_async = True
    _async: AsyncSession | None = None
    #: Whether this scope holds its breaker's half-open trial (settled by :meth:`end`).
    trial = False

    def __init__(self, parent: Frame | None) -> None:
        self.parent = parent

    @property
    def pool(self) -> str:  # type: ignore[override]
        """``DEFAULT_POOL``, read when something asks (invalid settings fail only their users)."""
        return request_pool()

    @property  # type: ignore[override]
    def async_session(self) -> AsyncSession:
        session = self._async
        if session is None:
            session = self._async = self._open()
        return session

    def _open(self) -> AsyncSession:
        name = self.pool
        entry = get_async_entry(name)
        breaker = breaker_for(name)
        if breaker is not None:
            # Fails fast while the breaker is open. A half-open trial is proved
            # by this scope's statements, and settled as it ends (end()).
            self.trial = breaker.before_call()
        session = entry.sessionmaker()
        if entry.base.track_sites:
            self.opened_at = note_opening(sys._getframe(1))  # the first frame outside us
        self._session = session.sync_session
        self.breaker = breaker
        if entry.base.start_trace is not None:
            self.trace = entry.base.start_trace()
        early = self.early
        if early:
            callbacks.adopt(session.sync_session, early)
            self.early = None
        state.sessions.total_sessions += 1
        state.sessions.active_sessions += 1
        return session

    @property
    def has_work(self) -> bool:
        """Whether ending it has anything to do: a session, or on_commit callbacks."""
        return self._async is not None or bool(self.early)

    async def end(self, *, commit: bool, exc: BaseException | None = None) -> None:
        """End the scope (:func:`end_async_scope`), then settle a breaker trial it held.

        The trial succeeded if the session reached the database and the end
        raised nothing; a connection failure was already counted by the end;
        anything else proves nothing, and the next caller gets the trial.
        """
        session = self._async
        reached = session is not None and session.sync_session.in_transaction()
        try:
            await end_async_scope(self, commit=commit, exc=exc, token=None)
        except BaseException:
            self._settle_trial(proved=False)
            raise
        self._settle_trial(proved=reached and exc is None)

    def _settle_trial(self, *, proved: bool) -> None:
        breaker = self.breaker
        if not self.trial or breaker is None:
            return
        self.trial = False
        if proved:
            breaker.record_success()
        else:
            breaker.release_trial()

    async def nest_in(self, outer: Frame) -> None:
        """Open now as a SAVEPOINT of ``outer``'s session (a request served inside a test's)."""
        session: AsyncSession = outer.async_session
        await _begin_nested(self.pool, self, session)
        self._async = session
        self._session = session.sync_session

    def __getattr__(self, name: str) -> Any:
        # Only for names the frame does not have: the session's.
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.async_session, name)

    def __repr__(self) -> str:
        state_ = "not opened yet" if self._async is None else repr(self._async)
        return f"<AsyncRequestSession of pool {self.pool!r}: {state_}>"
