"""session_scope(join_django=True): SQLAlchemy inside Django's own transaction."""

from __future__ import annotations

import pytest
from django.db import connection, transaction
from sqlalchemy import text

from mingus_sessions import session_scope
from tests.helpers import NoteRow
from tests.testapp.models import Note

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "other"])


def _titles() -> list[str]:
    return sorted(Note.objects.values_list("title", flat=True))


def _insert(session: object, title: str) -> None:
    session.execute(  # type: ignore[attr-defined]
        text("INSERT INTO testapp_note (title, body) VALUES (:t, '')"), {"t": title}
    )


def test_orm_and_sqlalchemy_commit_together() -> None:
    """Inside atomic(), an ORM write and a joined SQLAlchemy write commit together."""
    with transaction.atomic():
        Note.objects.create(title="orm")
        with session_scope(join_django=True) as session:
            _insert(session, "sa")
            # The joined session sees the ORM's uncommitted row: same connection.
            assert session.scalar(text("SELECT count(*) FROM testapp_note")) == 2
    assert _titles() == ["orm", "sa"]


def test_orm_and_sqlalchemy_roll_back_together() -> None:
    """When the atomic block fails, the joined SQLAlchemy write is rolled back with it."""
    with pytest.raises(RuntimeError), transaction.atomic():
        Note.objects.create(title="orm")
        with session_scope(join_django=True) as session:
            _insert(session, "sa")
        raise RuntimeError("abort")
    assert _titles() == []


def test_failed_joined_scope_rolls_back_only_its_savepoint() -> None:
    """A failure inside a joined scope undoes that scope's work and keeps the ORM's."""
    with transaction.atomic():
        Note.objects.create(title="kept")
        with pytest.raises(ValueError), session_scope(join_django=True) as session:
            _insert(session, "dropped")
            raise ValueError("inner")
        assert connection.in_atomic_block
    assert _titles() == ["kept"]


def test_outside_atomic_the_scope_opens_its_own() -> None:
    """Outside any atomic block a joined scope commits on success and rolls back on error."""
    with session_scope(join_django=True) as session:
        _insert(session, "committed")
        assert connection.in_atomic_block
    assert not connection.in_atomic_block
    with pytest.raises(KeyError), session_scope(join_django=True) as session:
        _insert(session, "rolled-back")
        raise KeyError("x")
    assert _titles() == ["committed"]


def test_nested_joined_scopes_are_savepoints() -> None:
    """A joined scope inside a joined scope is a savepoint on the same session."""
    with transaction.atomic(), session_scope(join_django=True) as outer:
        _insert(outer, "outer")
        with pytest.raises(ValueError), session_scope(join_django=True) as inner:
            assert inner is outer
            _insert(inner, "inner")
            raise ValueError
        with session_scope(join_django=True) as again:
            _insert(again, "again")
    assert _titles() == ["again", "outer"]


def test_plain_scope_inside_a_joined_scope_reuses_it() -> None:
    """A plain scope of the same pool inside a joined scope is a savepoint on it."""
    with (
        transaction.atomic(),
        session_scope(join_django=True) as outer,
        session_scope() as inner,
    ):
        assert inner is outer
        _insert(inner, "inner")
    assert _titles() == ["inner"]


def test_sqlalchemy_never_ends_djangos_transaction() -> None:
    """Committing a joined scope leaves Django's transaction open until atomic() ends."""
    with transaction.atomic():
        with session_scope(join_django=True) as session:
            _insert(session, "pending")
        if connection.vendor != "sqlite":  # SQLite would block the second connection
            # Another connection cannot see the row yet: nothing was committed.
            with session_scope(independent=True) as other:
                visible = other.scalar(
                    text("SELECT count(*) FROM testapp_note WHERE title = 'pending'")
                )
            assert visible == 0
    assert _titles() == ["pending"]


def test_joined_scope_whose_statement_failed_rolls_back_its_savepoint() -> None:
    """A joined scope ended by a failed statement leaves Django's transaction usable.

    On PostgreSQL the failed statement aborts the transaction until the
    scope's savepoint is rolled back, whatever state SQLAlchemy left it in.
    """
    with transaction.atomic():
        Note.objects.create(title="kept")
        refused = pytest.raises(Exception, match=r"(?i)unique|duplicate")
        with refused, session_scope(join_django=True) as session:
            _insert(session, "dropped")
            _insert(session, "kept")
        Note.objects.create(title="after")
    assert _titles() == ["after", "kept"]


def test_joined_scope_whose_flush_failed_rolls_back_its_savepoint() -> None:
    """The same with the ORM: a failed flush leaves SQLAlchemy's savepoint deactivated."""
    with transaction.atomic():
        Note.objects.create(title="kept")
        refused = pytest.raises(Exception, match=r"(?i)unique|duplicate")
        with refused, session_scope(join_django=True) as session:
            session.add(NoteRow(title="kept"))
        Note.objects.create(title="after")
    assert _titles() == ["after", "kept"]
