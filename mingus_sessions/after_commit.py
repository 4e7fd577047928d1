"""Run work once a scope's transaction commits: :func:`on_commit`.

A callback registered inside a scope waits for the outermost transaction of
that scope's session to commit, and runs after the session is closed. If the
transaction rolls back, or the SAVEPOINT that was innermost when the callback
was registered rolls back, the callback is dropped. Inside a joined scope
(``join_django=True``) Django owns the transaction, so Django's
``transaction.on_commit`` takes the callback.

A callback that fails after the commit cannot undo it: the failure is logged
(logger ``mingus_sessions``, with the callback's description) and the first one
is raised to the code that ended the scope as
:class:`~mingus_sessions.errors.AfterCommitError` (the original as its cause),
so it is never lost silently and never mistaken for a failed transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session, SessionTransaction

from .errors import AfterCommitError

__all__ = ["on_commit"]

logger = logging.getLogger("mingus_sessions")

_KEY = "mingus_sessions.after_commit"

#: (callback, the savepoints that were open when it was registered)
Pending = list[tuple[Callable[[], Any], tuple[SessionTransaction, ...]]]


def on_commit(callback: Callable[[], Any], pool: str | None = None) -> None:
    """Call ``callback()`` once the innermost active scope (of ``pool``) commits.

    Outside any scope there is nothing to wait for: the callback runs at once.
    """
    from .sessions import _innermost_frame

    frame = _innermost_frame(pool)
    if frame is None:
        callback()
        return
    if frame.joined:
        from django.db import transaction

        from .conf import pool_config

        transaction.on_commit(callback, using=pool_config(frame.pool).database)
        return
    if not frame.opened:
        # A request or task that has not touched the database yet: keep the
        # callback on the scope rather than open a session just to hold it.
        if frame.early is None:
            frame.early = []
        frame.early.append(callback)
        return
    session = frame.session
    pending: Pending = session.info.setdefault(_KEY, [])
    pending.append((callback, _open_savepoints(session)))


def adopt(session: Session, callbacks: list[Callable[[], Any]]) -> None:
    """Attach callbacks registered before ``session`` opened to its transaction."""
    pending: Pending = session.info.setdefault(_KEY, [])
    chain = _open_savepoints(session)
    pending.extend((callback, chain) for callback in callbacks)


def _open_savepoints(session: Session) -> tuple[SessionTransaction, ...]:
    chain: list[SessionTransaction] = []
    transaction = session.get_nested_transaction()
    while transaction is not None and transaction.nested:
        chain.append(transaction)
        transaction = transaction.parent
    return tuple(chain)


def discard_savepoint(session: Session, savepoint: SessionTransaction) -> None:
    """Drop the callbacks registered while ``savepoint`` (now rolled back) was open."""
    pending: Pending | None = session.info.get(_KEY)
    if pending:
        pending[:] = [entry for entry in pending if savepoint not in entry[1]]


def take(session: Session) -> Pending:
    """Remove and return the session's pending callbacks (after commit, or to drop them)."""
    return session.info.pop(_KEY, None) or []


def run(pending: Pending, pool: str) -> None:
    """Run callbacks after a commit; log each failure and raise the first as AfterCommitError."""
    first: BaseException | None = None
    first_callback: Callable[[], Any] | None = None
    for callback, _ in pending:
        try:
            callback()
        except Exception as exc:
            logger.error(
                "The transaction of pool %s committed, but %s failed after the commit",
                pool,
                _describe(callback),
                exc_info=True,
            )
            if first is None:
                first, first_callback = exc, callback
    if first is not None:
        raise AfterCommitError(
            f"The transaction of pool {pool} committed, but {_describe(first_callback)} "
            f"failed after the commit: {type(first).__name__}",
            pool=pool,
        ) from first


def _describe(callback: Callable[[], Any] | None) -> str:
    described = getattr(callback, "description", None)
    if isinstance(described, str):
        return described
    return getattr(callback, "__qualname__", None) or repr(callback)
