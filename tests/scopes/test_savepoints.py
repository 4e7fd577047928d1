"""Nested scopes are savepoints: each failure undoes its own level only (R11), and a caught
error never lets a scope report a commit that did not happen."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session

import mingus_sessions
from mingus_sessions import current_session, get_engine, session_scope
from mingus_sessions._core.state import state
from tests.helpers import NoteRow
from tests.scopes.helpers import BACKEND, Boom, checked_out, db, insert, titles


@db
@pytest.mark.parametrize("outer_fails", [False, True], ids=["outer-commit", "outer-rollback"])
@pytest.mark.parametrize("inner_fails", [False, True], ids=["inner-commit", "inner-rollback"])
def test_savepoint_matrix(outer_fails: bool, inner_fails: bool) -> None:
    """Outer commit/rollback x inner commit/rollback leaves exactly the expected rows (R11)."""
    try:
        with session_scope() as outer:
            insert(outer, "outer-1")
            try:
                with session_scope() as inner:
                    assert inner is outer
                    assert outer.in_nested_transaction()
                    insert(inner, "inner")
                    if inner_fails:
                        raise Boom("inner")
            except Boom:
                assert inner_fails
            assert not outer.in_nested_transaction()
            insert(outer, "outer-2")
            if outer_fails:
                raise Boom("outer")
    except Boom:
        assert outer_fails
    expected = (
        [] if outer_fails else sorted(["outer-1", "outer-2", *([] if inner_fails else ["inner"])])
    )
    assert titles() == expected
    assert state.sessions.savepoints == 1
    assert checked_out() == 0


@db
def test_inner_failure_rolls_back_only_inner_work() -> None:
    """An inner scope's failure undoes its own writes; the outer scope continues and commits."""

    def inner_work() -> None:
        with session_scope() as inner:
            assert inner is outer
            insert(inner, "inner-1")
            insert(inner, "inner-2")
            raise Boom

    with session_scope() as outer:
        insert(outer, "before")
        with pytest.raises(Boom):
            inner_work()
        assert current_session() is outer
        insert(outer, "after")
    assert titles() == ["after", "before"]


@db
@pytest.mark.parametrize("where", ["flush-in-body", "flush-at-inner-exit"])
def test_inner_scope_whose_flush_fails_leaves_the_outer_scope_usable(where: str) -> None:
    """A failed flush leaves the savepoint deactivated, not active: it is rolled back all the same.

    Otherwise the outer scope's next statement raises PendingRollbackError and
    the outer work is lost, where an inner failure must undo the inner work only.
    """
    with session_scope() as outer:
        outer.add(NoteRow(title="taken"))
        outer.flush()
        with pytest.raises(sa_exc.IntegrityError), session_scope() as inner:
            inner.add(NoteRow(title="taken"))  # a unique violation, at flush
            if where == "flush-in-body":
                inner.flush()
        assert not outer.in_nested_transaction()
        outer.add(NoteRow(title="after"))
    assert titles() == ["after", "taken"]
    assert checked_out() == 0


@db
def test_inner_scope_that_caught_its_failed_flush_rolls_back_and_says_so() -> None:
    """The flush's error was caught inside the inner scope, which then exits normally.

    Its savepoint is deactivated: the inner scope rolls it back and raises
    TransactionError, and the outer scope goes on and commits (every database).
    """
    with session_scope() as outer:
        insert(outer, "taken")
        refused = pytest.raises(mingus_sessions.TransactionError, match="savepoint on pool")
        with refused, session_scope() as inner:
            inner.add(NoteRow(title="taken"))
            with contextlib.suppress(sa_exc.IntegrityError):
                inner.flush()
        insert(outer, "after")
    assert titles() == ["after", "taken"]
    assert checked_out() == 0


@db
@pytest.mark.postgresql
def test_caught_error_inside_begin_nested_lets_the_outer_scope_commit() -> None:
    """ROLLBACK TO SAVEPOINT repairs PostgreSQL's aborted transaction, whoever issues it.

    SQLAlchemy's own ``begin_nested()`` idiom: the outer commit is not refused.
    """
    with session_scope() as outer:
        insert(outer, "kept")
        with pytest.raises(sa_exc.IntegrityError), outer.begin_nested():
            insert(outer, "kept")
        insert(outer, "after")
    assert titles() == ["after", "kept"]


@db
@pytest.mark.postgresql
def test_caught_error_inside_an_inner_scope_rolls_the_inner_scope_back() -> None:
    """An inner scope whose body caught a statement error raises and rolls back to its savepoint.

    RELEASE would fail on the aborted transaction and leave the outer scope
    unable to go on; instead the inner work is undone, the caller is told, and
    the outer transaction goes on and commits.
    """
    with session_scope() as outer:
        insert(outer, "kept")
        refused = pytest.raises(mingus_sessions.TransactionError, match="savepoint on pool 'main'")
        with refused, session_scope() as inner:
            insert(inner, "inner")
            with contextlib.suppress(sa_exc.IntegrityError):
                insert(inner, "kept")
        insert(outer, "after")
    assert titles() == ["after", "kept"]
    assert checked_out() == 0


@db
@pytest.mark.postgresql
def test_caught_error_in_the_outer_scope_refuses_the_commit() -> None:
    """PostgreSQL would answer COMMIT with ROLLBACK: the scope raises rather than report success."""
    refused = pytest.raises(mingus_sessions.TransactionError, match="aborted by an earlier")
    with refused, session_scope() as session:
        insert(session, "lost")
        with contextlib.suppress(sa_exc.IntegrityError):
            insert(session, "lost")
    assert titles() == []
    assert checked_out() == 0


@db
@pytest.mark.postgresql
def test_caught_error_on_a_connection_invalidated_since_still_refuses_the_commit() -> None:
    """A statement error was caught, then the connection was invalidated: TransactionError."""
    refused = pytest.raises(mingus_sessions.TransactionError, match="aborted by an earlier")
    with refused, session_scope() as session:
        with contextlib.suppress(sa_exc.ProgrammingError):
            session.execute(text("SELECT * FROM no_such_table"))
        session.connection().invalidate()
    assert checked_out() == 0


@db
def test_three_levels_of_savepoints() -> None:
    """Three nested scopes are savepoints on one session and each failure undoes its level only."""

    def third(level1: Session) -> None:
        with session_scope() as level3:
            assert level3 is level1
            insert(level3, "c")
            raise Boom("level 3")

    def second(level1: Session) -> None:
        with session_scope() as level2:
            assert level2 is level1
            insert(level2, "b")
            with pytest.raises(Boom, match="level 3"):
                third(level1)
            insert(level2, "d")
            raise Boom("level 2")

    with session_scope() as level1:
        insert(level1, "a")
        with pytest.raises(Boom, match="level 2"):
            second(level1)
        with session_scope() as again:
            insert(again, "e")
            with session_scope() as deepest:
                insert(deepest, "f")
        insert(level1, "g")
    assert titles() == ["a", "e", "f", "g"]
    assert state.sessions.savepoints == 4


@db
def test_no_savepoint_leaks() -> None:
    """After nested scopes end, no savepoint stays open, nothing is checked out, scopes work."""

    def failing_scope() -> None:
        with session_scope():
            raise Boom

    for _ in range(5):
        with session_scope() as outer:
            with session_scope(), pytest.raises(Boom):
                failing_scope()
            assert not outer.in_nested_transaction()
    assert state.sessions.savepoints == 10
    assert checked_out() == 0
    with session_scope() as session:
        insert(session, "works")
        assert not session.in_nested_transaction()
    assert titles() == ["works"]


@db
def test_savepoint_statements_and_outer_rollback_undo_released_savepoint() -> None:
    """SAVEPOINT / RELEASE are really emitted (SQLite too) and an outer rollback undoes both."""
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement.upper())

    def release_then_fail() -> None:
        with session_scope() as outer:
            insert(outer, "outer")
            with session_scope() as inner:
                insert(inner, "released")
            raise Boom

    engine = get_engine()
    event.listen(engine, "before_cursor_execute", record)
    try:
        with pytest.raises(Boom):
            release_then_fail()
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert any(s.startswith("SAVEPOINT") for s in statements)
    assert any(s.startswith("RELEASE SAVEPOINT") for s in statements)
    if BACKEND == "sqlite":
        assert "BEGIN" in statements
    assert titles() == []
