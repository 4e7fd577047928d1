"""The innermost active scope of this thread or asyncio task.

Plain Python. The scopes (``session_scope()``, a request's, a task's) form a
linked list through their ``parent``; the head lives in this
:class:`~contextvars.ContextVar`. It has a module of its own because both the
sessions and the metrics read it, and the metrics must not import the sessions.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .sessions import _Frame

__all__ = ["active_scope"]

active_scope: ContextVar[_Frame | None] = ContextVar("mingus_sessions_active_scope", default=None)
