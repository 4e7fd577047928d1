"""The one way out of a scope: :func:`end_scope`.

Plain Python over SQLAlchemy. Every kind of scope (``session_scope()``, a
nested one, a joined one, a request's, a task's) is a
:class:`~.frames.Frame`, and every one ends through :func:`end_scope`: commit
or roll back exactly once, close, leave the context, translate the error once,
tell the breaker only about connection failures, and run or drop the on_commit
callbacks. What differs between the kinds (a session of its own, a savepoint
of an outer session, a savepoint on Django's connection with an atomic block
around it, a lazy scope that never opened) is the branch taken here, not a
copy of this code elsewhere.

The plain session's branch is written out in :func:`end_scope` itself: it is
the path of nearly every scope, and each call saved there is a call saved per
transaction (``tests/scopes/test_call_budget.py`` counts them).
"""

from __future__ import annotations

import logging
from contextvars import Token

from sqlalchemy.orm import Session

from . import callbacks
from .breaker import CircuitBreaker
from .callbacks import WATCHED
from .failures import (
    close_session,
    connection_lost,
    record_failure,
    refuse_aborted,
    rollback,
    translated,
)
from .frames import Frame, leave
from .savepoints import end_savepoint
from .state import state
from .translate import commit_outcome_unknown

__all__ = ["end_scope"]

logger = logging.getLogger("mingus_sessions")


def end_scope(
    frame: Frame,
    *,
    commit: bool,
    exc: BaseException | None = None,
    token: Token[Frame | None] | None = None,
) -> None:
    """End ``frame``'s scope: commit (``commit=True``) or roll back, close, run callbacks.

    ``exc`` is the exception that ended the scope (``None`` for a clean exit,
    or a rollback the caller decided on, such as a 4xx response): it is
    counted and translated, and its translation raised ``from`` it. ``token``,
    when given, leaves the context once the transaction has ended and before
    the callbacks run, so that a callback's own scope gets a transaction of its
    own. A frame is ended once; a second call does nothing (a response may be
    closed twice).
    """
    if frame.finished:
        return
    frame.finished = True
    session = frame._session
    if frame.joined or frame.savepoint is not None or session is None:
        _end_other(frame, commit=commit, exc=exc, token=token)
        return
    name = frame.pool
    try:
        committed = _end_session(name, session, frame.breaker, commit=commit, exc=exc)
    except BaseException as failure:
        if frame.trace is not None:
            frame.trace.end(failure)
        if token is not None:
            leave(token)
        _run_callbacks(callbacks.take(session), name, failure)
        raise
    if frame.trace is not None:
        frame.trace.end(exc)
    if token is not None:
        leave(token)
    if committed:
        # After close and out of the scope: a slow publish must not hold the
        # connection, and a callback's own scope must be a new one.
        _run_callbacks(committed, name, exc)


def _end_other(
    frame: Frame,
    *,
    commit: bool,
    exc: BaseException | None,
    token: Token[Frame | None] | None,
) -> None:
    """The scopes without a session of their own: savepoints, joined, never opened."""
    try:
        if frame.joined:
            _end_joined(frame, commit=commit, exc=exc)
        elif frame.savepoint is not None:
            savepoint, frame.savepoint = frame.savepoint, None
            end_savepoint(frame.pool, savepoint, commit=commit, exc=exc)
        elif commit and frame.early:
            _end_unopened(frame)
    finally:
        if token is not None:
            leave(token)


def _end_unopened(frame: Frame) -> None:
    """A lazy scope that never opened its session, but holds on_commit callbacks."""
    early, frame.early = frame.early or [], None
    outer = frame.parent
    while outer is not None and (
        outer.pool != frame.pool or outer.is_async is not frame.is_async or outer.finished
    ):
        outer = outer.parent
    if outer is None:
        # Nothing to commit: the callbacks' transaction trivially succeeded.
        callbacks.run([(callback, ()) for callback in early], frame.pool)
        return
    # Had it opened, this scope would have been a savepoint of the outer one:
    # its callbacks wait for that transaction.
    for callback in early:
        callbacks.register(outer, callback)


def _end_joined(frame: Frame, *, commit: bool, exc: BaseException | None) -> None:
    """A joined scope: its savepoint on Django's connection, then Django's atomic block.

    Django owns the transaction: the scope ends its savepoint as a nested
    scope does and closes its session, then leaves the atomic block it opened,
    if it opened one (``frame.release``, called as ``__exit__``), which commits
    or rolls back Django's side.
    """
    session = frame.session
    savepoint, frame.savepoint = frame.savepoint, None
    stats = state.sessions
    stats.active_sessions -= 1
    try:
        try:
            if savepoint is not None:
                # The scope's own exception is translated below, once.
                end_savepoint(frame.pool, savepoint, commit=commit, exc=None)
        finally:
            close_session(session, frame.pool)
    except BaseException as failure:
        stats.transaction_rollbacks += 1  # (end_savepoint counted the failure)
        if frame.release is not None:
            frame.release(type(failure), failure, failure.__traceback__)
        raise
    if exc is None and commit:
        stats.committed_transactions += 1
    else:
        stats.transaction_rollbacks += 1
        if exc is not None:
            stats.failed_sessions += 1
    if frame.release is not None:
        frame.release(type(exc) if exc else None, exc, exc.__traceback__ if exc else None)
    if exc is not None:
        error = translated(frame.pool, exc)
        if error is not None:
            raise error from exc


def _end_session(
    name: str,
    session: Session,
    breaker: CircuitBreaker | None,
    *,
    commit: bool,
    exc: BaseException | None = None,
) -> callbacks.Pending:
    """Commit or roll back, then close; raise the translated failure, if any.

    ``exc`` is the exception that ended the scope (``None`` for a clean exit or
    a rollback the caller decided on, such as a 4xx response). Returns the
    callbacks to run now that the transaction committed: the caller runs them
    once the scope is no longer the active one, so that a callback opening a
    scope of its own gets a transaction of its own. After a rollback, that is
    those of a transaction the scope's code committed itself; if this raises,
    :func:`callbacks.take` still has them for the caller.
    """
    committed: callbacks.Pending = []
    try:
        if commit:
            touched = session.in_transaction()
            flushed = False
            try:
                if state.aborted_connections and touched:
                    refuse_aborted(session, name)
                # Pending ORM changes first: a failure before this line is a
                # known rollback, one after it may have hit COMMIT in flight.
                session.flush()
                flushed = True
                session.commit()
            except BaseException as commit_exc:
                callbacks.drop_uncommitted(session)
                rollback(session, name)
                state.sessions.failed_sessions += 1
                error = translated(name, commit_exc, at_commit=True)
                record_failure(breaker, commit_exc if error is None else error)
                if flushed and connection_lost(commit_exc, error):
                    error = commit_outcome_unknown(name, commit_exc)
                if error is not None:
                    raise error from commit_exc
                raise
            if WATCHED in session.info:  # it held a callback: take it (nearly none do)
                committed = callbacks.take(session)
            state.sessions.committed_transactions += 1
            if touched and breaker is not None:
                breaker.record_success()
        else:
            callbacks.drop_uncommitted(session)
            rollback(session, name)
            if exc is not None:
                state.sessions.failed_sessions += 1
                error = translated(name, exc)
                record_failure(breaker, exc if error is None else error)
                if error is not None:
                    raise error from exc
            committed = callbacks.take(session)
    finally:
        close_session(session, name)
        state.sessions.active_sessions -= 1
    return committed


def _run_callbacks(committed: callbacks.Pending, pool: str, failure: BaseException | None) -> None:
    """Run callbacks whose transaction committed, once the scope is no longer active.

    With ``failure``, the scope is failing (after its code committed once):
    that failure goes on, and a callback's failure becomes a note on it.
    """
    if not committed:
        return
    if failure is None:
        callbacks.run(committed, pool)
    else:
        callbacks.run_despite(committed, pool, failure)
