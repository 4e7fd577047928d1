"""on_commit callbacks: kept per session, dropped with what rolls back, run after the commit.

A callback registered inside a scope waits for the outermost transaction of
that scope's session to commit, and runs after the session is closed. If the
transaction rolls back, or a SAVEPOINT that was open when the callback was
registered rolls back, the callback is dropped: whether a nested scope, the
scope's own code (``session.begin_nested()``, ``savepoint.rollback()``) or
SQLAlchemy (a failed flush) rolled it back. If the scope's own code commits
(``session.commit()``) and goes on, the callbacks registered until then belong
to that commit: they run when the scope ends, even if it fails afterwards.
Inside a joined scope
(``join_django=True``) Django owns the transaction: the joined session carries,
in ``session.info[JOINED]``, the function that hands a callback to Django's
``transaction.on_commit`` (set by :mod:`mingus_sessions.joined`).

Plain Python over SQLAlchemy's session events; the public ``on_commit`` is
:mod:`mingus_sessions.after_commit`.

A callback that fails after the commit cannot undo it: the failure is logged
(logger ``mingus_sessions``, with the callback's description) and the first one
is raised to the code that ended the scope as
:class:`~mingus_sessions.errors.AfterCommitError` (the original as its cause),
so it is never lost silently and never mistaken for a failed transaction.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction

from .errors import AfterCommitError
from .frames import Frame

__all__ = [
    "JOINED",
    "WATCHED",
    "Pending",
    "adopt",
    "discard_savepoint",
    "drop_uncommitted",
    "register",
    "run",
    "run_despite",
    "take",
]

logger = logging.getLogger("mingus_sessions")

_KEY = "mingus_sessions.after_commit"
#: Callbacks whose transaction the scope's own code committed (``session.commit()``).
_COMMITTED = "mingus_sessions.after_commit.committed"
#: Set in ``session.info`` once the session's rollbacks and commits are watched:
#: a session without it never held a callback (nearly all), and has none to take.
WATCHED = "mingus_sessions.after_commit.watched"
#: In ``session.info`` of a joined session (Django's connection and transaction): the
#: function that makes a callback wait for Django's commit.
JOINED = "mingus_sessions.joined"

#: (callback, the savepoints that were open when it was registered)
Pending = list[tuple[Callable[[], Any], tuple[SessionTransaction, ...]]]


def register(frame: Frame, callback: Callable[[], Any]) -> None:
    """Make ``callback`` wait for the transaction of ``frame``, an active scope."""
    if not frame.opened:
        # A request or task that has not touched the database yet: keep the
        # callback on the scope rather than open a session just to hold it.
        if frame.early is None:
            frame.early = []
        frame.early.append(callback)
        return
    session = frame.session
    info = session.info
    defer = info.get(JOINED)
    if defer is not None:
        # A joined scope, or a scope that is a savepoint on a joined session.
        _register_joined(session, defer, callback)
        return
    pending: Pending = info.setdefault(_KEY, [])
    _watch(session)
    pending.append((callback, _open_savepoints(session)))


def _register_joined(
    session: Session, defer: Callable[[Callable[[], None]], None], callback: Callable[[], Any]
) -> None:
    """Make ``callback`` wait for Django's transaction, under which ``session`` runs."""
    # Django runs it when its transaction commits; until then it waits on
    # the joined session too, which drops it if a joined scope (each is a
    # SAVEPOINT Django does not know about) or a begin_nested() rolls back.
    entry = (callback, _open_savepoints(session))
    kept: Pending = session.info.setdefault(_KEY, [])
    kept.append(entry)
    _watch(session)
    defer(functools.partial(_run_if_kept, kept, entry))


def adopt(session: Session, callbacks: list[Callable[[], Any]]) -> None:
    """Attach callbacks registered before ``session`` opened to its transaction."""
    defer = session.info.get(JOINED)
    if defer is not None:
        for callback in callbacks:
            _register_joined(session, defer, callback)
        return
    pending: Pending = session.info.setdefault(_KEY, [])
    _watch(session)
    chain = _open_savepoints(session)
    pending.extend((callback, chain) for callback in callbacks)


def _watch(session: Session) -> None:
    """Follow the transactions of ``session`` that the scope does not end itself.

    The scopes of this package drop the callbacks of what they roll back
    themselves; the scope's own code may roll back a savepoint it began
    (``session.begin_nested()``) or the whole transaction
    (``session.rollback()``) and go on, and SQLAlchemy does either after a
    failed flush: the callbacks of what rolled back are dropped. The code may
    also commit (``session.commit()``) and go on: the callbacks of what
    committed are set apart, so that a later failure of the scope does not drop
    them. The listeners go on the session itself, the first time a callback is
    registered on it: a session that never holds one (nearly all) pays nothing
    for them.
    """
    info = session.info
    if WATCHED not in info:
        info[WATCHED] = True
        event.listen(session, "after_soft_rollback", _after_soft_rollback)
        # First among the session's own listeners: one of them that raises
        # after the COMMIT went through must not keep the callbacks of what
        # committed from being set apart. (Listeners on the Session class or
        # a sessionmaker still run before it.)
        event.listen(session, "after_commit", _after_commit, insert=True)


def _after_commit(session: Session) -> None:
    # SQLAlchemy sends the event for a released SAVEPOINT too, while it is
    # still the session's transaction: that commits nothing yet.
    info = session.info
    if JOINED in info or session.in_nested_transaction():
        return  # (joined: Django's transaction is the one that commits, its on_commit has them)
    pending: Pending | None = info.pop(_KEY, None)
    if pending:
        info.setdefault(_COMMITTED, []).extend(pending)


def _after_soft_rollback(session: Session, previous_transaction: SessionTransaction) -> None:
    info = session.info
    if not info.get(_KEY):
        return
    # A flush that fails rolls back its own internal transaction, and with it
    # the database-level transaction it runs in: the innermost savepoint, or
    # the outermost transaction.
    transaction: SessionTransaction | None = previous_transaction
    while transaction is not None and not transaction.nested:
        transaction = transaction.parent
    if transaction is not None:
        discard_savepoint(session, transaction)
    elif JOINED not in info:
        # The whole transaction rolled back, and the scope goes on in a new
        # one: what was registered in the old one must never run. (A joined
        # session's outermost transaction is Django's, which this does not end.)
        del info[_KEY]


def _run_if_kept(
    kept: Pending, entry: tuple[Callable[[], Any], tuple[SessionTransaction, ...]]
) -> None:
    """Run a joined scope's callback (Django's transaction committed) unless it was dropped."""
    if any(candidate is entry for candidate in kept):
        entry[0]()


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
    """Remove and return the callbacks to run now that the session's transaction committed.

    Those whose transaction the scope's code committed earlier come first.
    """
    info = session.info
    if WATCHED not in info:
        return []  # no callback was ever registered on it (nearly every session)
    committed: Pending = info.pop(_COMMITTED, None) or []
    return committed + (info.pop(_KEY, None) or [])


def drop_uncommitted(session: Session) -> None:
    """Drop the callbacks waiting for a transaction that is rolling back.

    Those whose transaction the scope's code already committed stay, for
    :func:`take`.
    """
    session.info.pop(_KEY, None)


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


def run_despite(pending: Pending, pool: str, failure: BaseException) -> None:
    """Run callbacks whose transaction committed before the scope failed with ``failure``.

    ``failure`` goes on being raised: a callback's failure is logged and added
    to it as a note, so that it does not hide why the scope failed.
    """
    try:
        run(pending, pool)
    except AfterCommitError as error:
        failure.add_note(str(error))


def _describe(callback: Callable[[], Any] | None) -> str:
    described = getattr(callback, "description", None)
    if isinstance(described, str):
        return described
    return getattr(callback, "__qualname__", None) or repr(callback)
