"""An ``AsyncSession`` that refuses a second asyncio task while one is using it.

Plain SQLAlchemy. Two tasks awaiting one session at once would interleave
their statements on its one connection, or corrupt its state; the second is
refused with :class:`~.errors.ConcurrentSessionUseError` instead. Every async
engine's sessionmaker makes these.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any

from sqlalchemy import util
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session
from sqlalchemy.util import greenlet_spawn

from .errors import ConcurrentSessionUseError

__all__ = ["GuardedAsyncSession", "joined_async_session"]


class GuardedAsyncSession(AsyncSession):
    """An ``AsyncSession`` that refuses a second task while one is using it (see the module)."""

    #: The task inside one of the session's awaitable methods right now.
    _in_use_by: asyncio.Task[Any] | None = None
    #: A scope's end waiting for that task to leave the method (see :meth:`claim`).
    _claimant: asyncio.Task[Any] | None = None
    #: Resolved when the session is handed to the claimant.
    _handed: asyncio.Future[None] | None = None

    async def claim(self) -> None:
        """Wait until no other task is inside a method of the session, then hold it.

        For the end of its scope, which must not commit or roll back under
        another task's statement. The task leaving the method hands the
        session straight to the claimant, so that it cannot start another
        call in between; from then on another task's call is refused.
        """
        task = asyncio.current_task()
        if self._in_use_by is None or self._in_use_by is task:
            self._in_use_by = task
            return
        self._claimant = task
        handed = self._handed = asyncio.get_running_loop().create_future()
        await handed

    def _release(self) -> None:
        """Let go of the session: to the claimant if one waits, else to anyone."""
        claimant, self._claimant = self._claimant, None
        self._in_use_by = claimant
        handed, self._handed = self._handed, None
        if handed is not None and not handed.done():
            handed.set_result(None)


def _guarded(name: str, method: Callable[..., Any] | None = None) -> Callable[..., Any]:
    """``method`` (AsyncSession's ``name`` by default), refusing a second task while one runs."""
    if method is None:
        method = getattr(AsyncSession, name)

    @functools.wraps(method)
    async def guarded(self: GuardedAsyncSession, *args: Any, **kwargs: Any) -> Any:
        task = asyncio.current_task()
        owner = self._in_use_by
        if owner is not None:
            if owner is task:  # one method awaiting another of the same session
                return await method(self, *args, **kwargs)
            raise ConcurrentSessionUseError(
                f"AsyncSession.{name}() was awaited by task {_task_name(task)} while task "
                f"{_task_name(owner)} was still using the session: a session is one "
                "transaction on one connection. Open an asession_scope() in each task.",
            )
        self._in_use_by = task
        try:
            return await method(self, *args, **kwargs)
        finally:
            if self._claimant is None:
                self._in_use_by = None
            else:  # a scope's end waits for this task to let go
                self._release()

    return guarded


def _task_name(task: asyncio.Task[Any] | None) -> str:
    return repr(task.get_name()) if task is not None else "(none)"


# Every awaitable method that reaches the connection or the session's state.
for _name in (
    "close",
    "commit",
    "connection",
    "delete",
    "execute",
    "flush",
    "get",
    "get_one",
    "invalidate",
    "merge",
    "refresh",
    "reset",
    "rollback",
    "run_sync",
    "scalar",
    "scalars",
    "stream",
    "stream_scalars",
):
    setattr(GuardedAsyncSession, _name, _guarded(_name))
del _name


class _JoinedAsyncSession(GuardedAsyncSession):
    """An ``AsyncSession`` over a sync session on a blocking driver (see below)."""

    async def _execute(
        self,
        statement: Any,
        params: Any = None,
        *,
        execution_options: Any = util.EMPTY_DICT,
        bind_arguments: Any = None,
        **kw: Any,
    ) -> Any:
        # AsyncSession.execute() ends by releasing the async driver's cursor;
        # a blocking driver's cursor has nothing to release, and its rows are
        # read as from any sync session.
        return await greenlet_spawn(
            self.sync_session.execute,
            statement,
            params=params,
            execution_options=execution_options,
            bind_arguments=bind_arguments,
            **kw,
        )

    async def stream(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(
            "stream() needs an async driver's server-side cursor; the test's joined session "
            "runs on Django's connection: use execute()."
        )

    async def connection(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(
            "connection() gives an AsyncConnection, which needs an async driver; the test's "
            "joined session runs on Django's connection: use its sync_session.connection()."
        )


_JoinedAsyncSession.execute = _guarded("execute", _JoinedAsyncSession._execute)  # type: ignore[method-assign]


def joined_async_session(sync_session: Session) -> GuardedAsyncSession:
    """An ``AsyncSession`` over an existing sync session (the test plugin's joined one).

    Its awaitable methods run the sync session's, through SQLAlchemy's
    greenlet, on whatever connection that session uses: a blocking driver
    then blocks the loop while a statement runs, which a test can afford.
    """
    # A "class" that returns the session there is: AsyncSession calls it once.
    existing: Any = lambda **_: sync_session  # noqa: E731
    return _JoinedAsyncSession(sync_session_class=existing)
