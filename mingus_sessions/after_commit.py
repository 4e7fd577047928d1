"""``on_commit``: run work once the innermost scope's transaction commits.

A callback registered inside a scope waits for the outermost transaction of
that scope's session to commit, and runs after the session is closed; it is
dropped if that transaction, or a SAVEPOINT open when it was registered, rolls
back. Inside a joined scope (``join_django=True``) Django owns the
transaction, so Django's ``transaction.on_commit`` runs it. The bookkeeping is
:mod:`mingus_sessions._core.callbacks`; ``docs/sessions.md`` says the rules.
"""

from __future__ import annotations

from asyncio import _get_running_loop
from collections.abc import Callable
from typing import Any

from ._core.callbacks import register
from ._core.frames import innermost

__all__ = ["on_commit"]


def on_commit(callback: Callable[[], Any], pool: str | None = None) -> None:
    """Call ``callback()`` once the innermost active scope (of ``pool``) commits.

    Outside any scope there is nothing to wait for: the callback runs at once.
    A callback that fails after the commit cannot undo it: its failure is
    logged and raised to the code that ended the scope as
    :class:`~mingus_sessions.errors.AfterCommitError`.
    """
    # Called from sync code (no loop runs in this thread), it belongs to the
    # innermost sync scope: an async scope around it ends in another thread's loop.
    frame = innermost(pool, include_async=_get_running_loop() is not None)
    if frame is None:
        callback()
        return
    register(frame, callback)
