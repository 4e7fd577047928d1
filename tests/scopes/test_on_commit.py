"""on_commit: a callback runs once its transaction has committed, and never if it rolled back."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.db import transaction
from django.test import AsyncClient, Client
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session

from mingus_sessions import session_scope
from mingus_sessions._core import callbacks
from mingus_sessions._core.state import state
from mingus_sessions.after_commit import on_commit
from mingus_sessions.sessions import LazyScope
from tests.helpers import NoteRow
from tests.scopes.helpers import Boom, checked_out, db, insert, titles

# -- in scopes and savepoints --------------------------------------------------------------------


@db
@pytest.mark.parametrize("how", ["session.rollback()", "a failed flush"])
def test_callbacks_of_a_transaction_rolled_back_inside_the_scope_are_dropped(how: str) -> None:
    """The scope goes on in a new transaction and commits: only that one's callbacks run."""
    ran: list[str] = []
    with session_scope() as session:
        insert(session, "taken")
        session.commit()
        on_commit(lambda: ran.append("rolled back"))
        if how == "session.rollback()":
            insert(session, "lost")
            session.rollback()
        else:
            session.add(NoteRow(title="taken"))
            with pytest.raises(sa_exc.IntegrityError):
                session.flush()
            session.rollback()
        on_commit(lambda: ran.append("committed"))
        insert(session, "kept")
    assert ran == ["committed"]
    assert titles() == ["kept", "taken"]


@db
def test_callbacks_wait_for_the_scopes_end_after_a_commit_of_its_own() -> None:
    """The scope's code commits and goes on: every callback runs once the scope ends, in order."""
    ran: list[str] = []
    with session_scope() as session:
        insert(session, "first")
        on_commit(lambda: ran.append("before the commit"))
        session.commit()
        assert ran == []
        insert(session, "second")
        on_commit(lambda: ran.append("after the commit"))
    assert ran == ["before the commit", "after the commit"]
    assert titles() == ["first", "second"]


@db
@pytest.mark.parametrize("how", ["an exception", "a failed commit"])
def test_callbacks_of_a_commit_of_its_own_run_when_the_scope_then_fails(how: str) -> None:
    """What the scope's code committed stays, and so do the callbacks that waited for it.

    They run once the scope is over, not inside it: a callback that opens a
    scope gets a transaction of its own. The scope's failure goes on.
    """
    ran: list[str] = []

    def follow_up() -> None:
        with session_scope() as session:
            ran.append(f"nested: {session.in_nested_transaction()}")
            insert(session, "follow-up")

    expected: type[BaseException] = ValueError if how == "an exception" else sa_exc.IntegrityError
    with pytest.raises(expected), session_scope() as session:
        insert(session, "taken")
        on_commit(follow_up)
        session.commit()
        on_commit(lambda: ran.append("rolled back"))
        insert(session, "lost")
        if how == "an exception":
            raise ValueError("the scope fails after its own commit")
        session.add(NoteRow(title="taken"))  # the scope's flush at its end fails
    assert ran == ["nested: False"]
    assert titles() == ["follow-up", "taken"]
    assert checked_out() == 0


@db
def test_callbacks_of_a_commit_survive_another_after_commit_listener_that_raises() -> None:
    """The COMMIT went through; a listener of the session's then failed: the callback still runs."""
    ran: list[str] = []

    def broken_listener(session: Session) -> None:
        raise RuntimeError("a listener of the application fails after the commit")

    with pytest.raises(RuntimeError, match="listener"), session_scope() as session:
        event.listen(session, "after_commit", broken_listener)
        insert(session, "committed")
        on_commit(lambda: ran.append("committed"))
        session.commit()
    assert titles() == ["committed"]
    assert ran == ["committed"]


@db
def test_a_failing_callback_of_a_failing_scope_is_noted_on_the_scopes_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The scope's own failure is raised; the callback's is logged and added to it as a note."""

    def broken() -> None:
        raise RuntimeError("broker down")

    with pytest.raises(ValueError, match="the scope fails") as raised, session_scope() as session:
        insert(session, "taken")
        on_commit(broken)
        session.commit()
        raise ValueError("the scope fails")
    notes = getattr(raised.value, "__notes__", [])
    assert len(notes) == 1
    assert "committed, but" in notes[0]
    assert "broken" in notes[0]
    assert "RuntimeError" in notes[0]
    assert "broker down" in caplog.text
    assert titles() == ["taken"]


@db
def test_on_commit_callback_may_open_a_scope_of_its_own() -> None:
    """After the commit, a callback that writes gets a transaction of its own.

    (Not a SAVEPOINT on the finished scope's closed session, which nobody would commit.)
    """
    inner: list[bool] = []

    def follow_up() -> None:
        with session_scope() as session:
            inner.append(session.in_nested_transaction())
            insert(session, "follow-up")

    with session_scope() as session:
        insert(session, "first")
        on_commit(follow_up)
    try:
        assert inner == [False]
        assert checked_out() == 0
        assert checked_out("other") == 0
        assert state.sessions.active_sessions == 0
        assert titles() == ["first", "follow-up"]
    finally:
        session.close()  # a no-op unless a callback reopened the finished scope's session


@db
def test_only_a_session_holding_a_callback_watches_rollbacks() -> None:
    """Watching rollbacks costs nothing to a session that holds no callback (nearly all)."""
    listening = (callbacks._after_soft_rollback,)
    with session_scope() as session:
        insert(session, "no callback")
        with session_scope():
            insert(session, "no callback either")
        assert not event.contains(session, "after_soft_rollback", *listening)
        on_commit(lambda: None)
        assert event.contains(session, "after_soft_rollback", *listening)


@db
def test_on_commit_in_a_joined_scope_is_dropped_with_the_scopes_savepoint() -> None:
    """Each joined scope is a SAVEPOINT Django does not know about: its rollback drops the callback.

    Even when the ``atomic`` block around it goes on and commits.
    """
    ran: list[str] = []
    with transaction.atomic():
        with pytest.raises(ValueError), session_scope(join_django=True) as session:
            insert(session, "rolled-back")
            on_commit(lambda: ran.append("joined scope rolled back"))
            raise ValueError("the joined scope fails")
        with session_scope(join_django=True) as session:
            with pytest.raises(ValueError), session_scope(join_django=True):
                on_commit(lambda: ran.append("nested joined scope rolled back"))
                raise ValueError("the nested joined scope fails")
            with pytest.raises(ValueError), session.begin_nested():
                on_commit(lambda: ran.append("begin_nested rolled back"))
                raise ValueError("the savepoint fails")
            with session_scope(join_django=True):
                on_commit(lambda: ran.append("nested joined scope released"))
            insert(session, "kept")
            on_commit(lambda: ran.append("joined scope released"))
        assert ran == []
    assert ran == ["nested joined scope released", "joined scope released"]
    assert titles() == ["kept"]


# -- in a task's or a request's scope -----------------------------------------------------------


def commit_unopened_lazy_scope(callback: Any) -> None:
    """A task's or request's scope that registers ``callback`` and commits without a statement."""
    scope = LazyScope()
    token = scope.activate()
    try:
        on_commit(callback)
        scope.finish(commit=True)
    finally:
        LazyScope.deactivate(token)


@db
@pytest.mark.parametrize("outer_fails", [False, True], ids=["outer-commits", "outer-rolls-back"])
def test_lazy_scope_that_never_opened_hands_its_callbacks_to_the_outer_scope(
    outer_fails: bool,
) -> None:
    """A task or request scope inside a scope, with on_commit callbacks but no statement.

    Had it opened, it would have been a savepoint of the outer scope: its
    callbacks wait for the outer transaction, and are dropped if it rolls back.
    """
    ran: list[str] = []
    with contextlib.suppress(Boom), session_scope() as outer:
        insert(outer, "outer")
        commit_unopened_lazy_scope(lambda: ran.append("published"))
        assert ran == []
        if outer_fails:
            raise Boom
    assert ran == ([] if outer_fails else ["published"])


@db
def test_lazy_scope_inside_an_unopened_lazy_scope_keeps_the_callbacks_waiting() -> None:
    """Neither scope opened: the callbacks wait for the outer one, and run when it commits."""
    ran: list[str] = []
    outer = LazyScope()
    outer_token = outer.activate()
    try:
        commit_unopened_lazy_scope(lambda: ran.append("published"))
        assert ran == []
    finally:
        LazyScope.deactivate(outer_token)
    outer.finish(commit=True)
    assert ran == ["published"]


@db
def test_on_commit_in_a_request_that_never_used_the_database(client: Client) -> None:
    """A callback registered by a view that touched no database runs once the response is OK."""
    from tests import views as test_views

    test_views.callbacks_run.clear()
    assert client.get("/on-commit/200/").status_code == 200
    assert client.get("/on-commit/400/").status_code == 400
    assert test_views.callbacks_run == [200]


@db
@pytest.mark.parametrize("outcome", ["raise", "400"])
def test_callbacks_of_a_views_own_commit_run_when_the_request_then_fails(outcome: str) -> None:
    """What the view committed itself stays, and so does the callback that waited for it."""
    from tests import views as test_views

    test_views.callbacks_run.clear()
    client = Client(raise_request_exception=False)
    expected = 500 if outcome == "raise" else 400
    assert client.get(f"/commit-midway/{outcome}/").status_code == expected
    assert test_views.callbacks_run == ["midway"]
    assert titles() == ["midway"]
    assert checked_out() == 0


@db
@pytest.mark.parametrize("outcome", ["raise", "400"])
def test_async_callbacks_of_a_views_own_commit_run_when_the_request_then_fails(
    outcome: str,
) -> None:
    """Under ASGI too, the callback of what the view committed itself runs."""
    from tests import views as test_views

    async def scenario(async_client: AsyncClient) -> None:
        response = await async_client.get(f"/commit-midway/{outcome}/")
        assert response.status_code == (500 if outcome == "raise" else 400)
        assert await sync_to_async(titles)() == ["midway"]
        assert await sync_to_async(checked_out)() == 0

    test_views.callbacks_run.clear()
    asyncio.run(scenario(AsyncClient(raise_request_exception=False)))
    assert test_views.callbacks_run == ["midway"]
