"""Savepoints: the one a nested scope begins, and how it ends.

Plain Python over SQLAlchemy. A scope nested in another of the same pool (a
nested ``session_scope()``, a request's scope served inside a test's
``sa_session``) is a SAVEPOINT on the outer session; :func:`end_savepoint` is
its branch of :func:`~.scopes.end_scope`.
"""

from __future__ import annotations

from sqlalchemy.orm import Session, SessionTransaction

from . import callbacks
from .errors import TransactionError
from .failures import rollback, transaction_aborted, translated
from .state import state

__all__ = ["begin_savepoint", "end_savepoint", "still_open"]


def begin_savepoint(session: Session) -> SessionTransaction:
    """Begin a SAVEPOINT on ``session``; on Django's connection, emit it now.

    SQLAlchemy emits SAVEPOINT before its own first statement in it, which is
    enough where the session has a connection of its own. A joined session
    shares Django's connection: ORM writes made in the scope before any
    SQLAlchemy statement must already be inside the savepoint.
    """
    savepoint = session.begin_nested()
    if callbacks.JOINED in session.info:
        try:
            session.connection()
        except BaseException:
            if still_open(savepoint):
                savepoint.rollback()  # never emitted: ends SQLAlchemy's side only
            raise
    return savepoint


def end_savepoint(
    name: str,
    savepoint: SessionTransaction,
    *,
    commit: bool,
    exc: BaseException | None = None,
) -> None:
    """Release or roll back a savepoint; raise the translated failure, if any.

    A savepoint already closed (the scope's code rolled it back, or its outer
    transaction ended) is left as it is.
    """
    if commit:
        if not still_open(savepoint):
            return
        if _failed_inside(savepoint):
            # A database error inside the savepoint was caught: RELEASE would
            # fail (and on PostgreSQL leave the outer transaction aborted).
            # Roll back to the savepoint instead, so that the outer
            # transaction can go on, and say why its work is gone.
            callbacks.discard_savepoint(savepoint.session, savepoint)
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
            callbacks.discard_savepoint(savepoint.session, savepoint)
            _roll_back_savepoint(savepoint, name)
            state.sessions.failed_sessions += 1
            error = translated(name, commit_exc, at_commit=True)
            if error is not None:
                raise error from commit_exc
            raise
        return
    callbacks.discard_savepoint(savepoint.session, savepoint)
    _roll_back_savepoint(savepoint, name)
    if exc is None:
        return
    state.sessions.failed_sessions += 1
    error = translated(name, exc)
    if error is not None:
        raise error from exc


def _failed_inside(savepoint: SessionTransaction) -> bool:
    """Whether a database error the scope's code caught has spoilt ``savepoint``.

    A caught flush failure leaves it open but deactivated (on every
    database); a caught statement failure leaves PostgreSQL's transaction
    aborted, which the driver reports.
    """
    if not savepoint.is_active:
        return still_open(savepoint)
    return bool(state.aborted_connections) and transaction_aborted(savepoint.session.connection())


def still_open(savepoint: SessionTransaction) -> bool:
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
    if still_open(savepoint):
        rollback(savepoint, pool)
