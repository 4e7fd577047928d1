"""Scope frames: the active scopes of this thread or asyncio task.

Plain Python. The scopes (``session_scope()``, a request's, a task's) form a
linked list through their ``parent``; the head lives in the
:class:`~contextvars.ContextVar` :data:`active_scope`. The sessions, the
on_commit callbacks and the pool recorder (for leak reports) all read it.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from types import CodeType
from typing import Any

from sqlalchemy.orm import Session

__all__ = ["Frame", "Opened", "active_scope", "find", "innermost"]

#: Where a scope opened its session, for leak reports: the code, the
#: instruction offset in it and the thread (see :mod:`.recorder`).
Opened = tuple[CodeType, int, int]


class Frame:
    """One active scope: its pool and session (opened on first use by a LazyScope).

    The class attributes are the values of a frame that nothing has changed
    yet: a :class:`LazyScope`, which is its own frame, is created writing only
    its pool (and a request's scope not even that), so a request that never
    uses its session pays for one small object.
    """

    pool: str
    #: The next active scope out, in this context.
    parent: Frame | None = None
    #: A scope running in Django's transaction (``join_django=True``).
    joined: bool = False
    _session: Session | None = None
    #: on_commit callbacks registered before a lazy session was opened.
    early: list[Callable[[], Any]] | None = None
    #: Where the session was opened, for leak reports (when they are on).
    opened_at: Opened | None = None

    def __init__(
        self, pool: str, session: Session | None, parent: Frame | None, joined: bool
    ) -> None:
        self.pool = pool
        self._session = session
        self.parent = parent
        self.joined = joined

    @property
    def session(self) -> Session:
        session = self._session
        assert session is not None  # set by __init__; LazyScope opens its own
        return session

    @property
    def opened(self) -> bool:
        return self._session is not None


def find(pool: str, *, joined_only: bool = False) -> Frame | None:
    frame = active_scope.get()
    while frame is not None:
        if frame.pool == pool and (frame.joined or not joined_only):
            return frame
        frame = frame.parent
    return None


def innermost(pool: str | None = None) -> Frame | None:
    frame = active_scope.get()
    while frame is not None and pool is not None and frame.pool != pool:
        frame = frame.parent
    return frame


active_scope: ContextVar[Frame | None] = ContextVar("mingus_sessions_active_scope", default=None)
