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

from sqlalchemy.orm import Session, SessionTransaction

from .breaker import CircuitBreaker
from .telemetry import ScopeTrace

__all__ = ["Frame", "Opened", "active_scope", "enter", "find", "innermost", "leave"]

#: Where a scope opened its session, for leak reports: the code, the
#: instruction offset in it and the thread (see :mod:`.recorder`).
Opened = tuple[CodeType, int, int]


class Frame:
    """One active scope: what it is, and what :func:`~.scopes.end_scope` needs to end it.

    Every kind of scope is one: a ``session_scope()`` with a session of its
    own, a nested one (a savepoint of the outer session), a joined one (a
    savepoint on Django's connection), a request's or a task's (a lazy scope,
    whose session opens on first use). The class attributes are the values of
    a frame that nothing has changed yet: a lazy scope is created writing only
    its pool, so a request that never uses its session pays for one small
    object.
    """

    pool: str
    #: The next active scope out, in this context.
    parent: Frame | None = None
    #: A scope running in Django's transaction (``join_django=True``) on a
    #: joined session of its own.
    joined: bool = False
    _session: Session | None = None
    #: The savepoint this scope is: of an outer scope's session, or a joined
    #: scope's on Django's connection.
    savepoint: SessionTransaction | None = None
    #: The pool's circuit breaker, for a scope that opened a session of its own.
    breaker: CircuitBreaker | None = None
    #: A joined scope's way out of the atomic block it opened (its ``__exit__``).
    release: Callable[[type[BaseException] | None, BaseException | None, Any], Any] | None = None
    #: on_commit callbacks registered before a lazy session was opened.
    early: list[Callable[[], Any]] | None = None
    #: Where the session was opened, for leak reports (when they are on).
    opened_at: Opened | None = None
    #: The scope's trace (an OpenTelemetry span), when its pool is traced and the
    #: scope opened a session of its own; ended by :func:`~.scopes.end_scope`.
    trace: ScopeTrace | None = None
    #: Set once the scope has ended: a second end does nothing.
    finished: bool = False
    #: A read-only scope (``read_only=True``), and the replica's pool serving it, if any.
    read_only: bool = False
    replica: str | None = None
    #: An async scope: its ``AsyncSession`` is ``async_session``, and
    #: ``_session`` its sync session, which :func:`~.scopes.end_scope` ends
    #: inside SQLAlchemy's greenlet. Sync code never nests in an async scope,
    #: nor async code in a sync one.
    is_async: bool = False
    async_session: Any = None

    def __init__(self, pool: str, parent: Frame | None) -> None:
        self.pool = pool
        self.parent = parent

    @property
    def session(self) -> Session:
        session = self._session
        assert session is not None  # set by __init__; LazyScope opens its own
        return session

    @property
    def opened(self) -> bool:
        return self._session is not None


def find(pool: str, *, joined_only: bool = False, asynchronous: bool = False) -> Frame | None:
    """The innermost active scope of ``pool`` of the same kind (sync or async), or None.

    A frame that has ended is skipped: an async generator abandoned inside a
    scope is ended by the loop in another task, and cannot take its frame
    off the context of the task that started it.
    """
    frame = active_scope.get()
    while frame is not None:
        if (
            frame.pool == pool
            and (frame.joined or not joined_only)
            and frame.is_async is asynchronous
            and not frame.finished
        ):
            return frame
        frame = frame.parent
    return None


def innermost(pool: str | None = None, *, include_async: bool = True) -> Frame | None:
    """The innermost active scope (of ``pool``, if given); async ones only if ``include_async``."""
    frame = active_scope.get()
    while frame is not None and (
        (pool is not None and frame.pool != pool)
        or (frame.is_async and not include_async)
        or frame.finished
    ):
        frame = frame.parent
    return frame


#: The innermost active scope. Outside the registry on purpose: a context
#: variable's value belongs to a thread or an asyncio task, not to the process.
active_scope: ContextVar[Frame | None] = ContextVar("mingus_sessions_active_scope", default=None)

#: Make a frame the innermost scope of this context, returning the token that
#: :data:`leave` takes; the context variable's own methods, bound once (a
#: call through a function of ours would cost a Python call per request).
enter = active_scope.set
leave = active_scope.reset
