"""session_scope(join_django=True): SQLAlchemy inside Django's own transaction."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, connection, transaction
from django.db.transaction import TransactionManagementError
from sqlalchemy import text

from mingus_sessions import TransactionError, session_scope
from mingus_sessions.joined import JoinedTransactionError
from mingus_sessions.sessions import LazyScope
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


# -- ORM writes belong to the scope's savepoint ------------------------------------------------


def test_orm_writes_in_a_failed_joined_scope_are_rolled_back() -> None:
    """ORM writes made in a failed joined scope, before any SQLAlchemy statement, roll back."""
    with transaction.atomic():
        Note.objects.create(title="kept")
        with pytest.raises(ValueError), session_scope(join_django=True):
            Note.objects.create(title="dropped")
            raise ValueError("inner")
        Note.objects.create(title="after")
    assert _titles() == ["after", "kept"]


def test_orm_writes_in_a_failed_scope_nested_in_a_joined_one_are_rolled_back() -> None:
    """A failed scope nested in a joined one rolls back the ORM writes made inside it."""
    with transaction.atomic(), session_scope(join_django=True):
        Note.objects.create(title="outer")
        with pytest.raises(ValueError), session_scope():
            Note.objects.create(title="nested")
            raise ValueError("nested")
        with pytest.raises(ValueError), session_scope(join_django=True):
            Note.objects.create(title="nested-joined")
            raise ValueError("nested joined")
    assert _titles() == ["outer"]


def test_orm_writes_in_a_failed_lazy_scope_nested_in_a_joined_one_are_rolled_back() -> None:
    """A request's or task's scope over a joined one covers the ORM writes made once it opened."""
    with transaction.atomic(), session_scope(join_django=True) as outer:
        scope = LazyScope()
        token = scope.activate()
        try:
            assert scope.session is outer
            Note.objects.create(title="in-request")
            scope.finish(commit=False)
        finally:
            LazyScope.deactivate(token)
        Note.objects.create(title="after")
    assert _titles() == ["after"]


def test_a_joined_scope_failed_by_an_orm_error_leaves_the_atomic_block_usable() -> None:
    """An ORM error ending a joined scope is undone with its savepoint: the atomic block goes on."""
    with transaction.atomic():
        Note.objects.create(title="outer")
        with pytest.raises(IntegrityError), session_scope(join_django=True):
            Note.objects.create(title="outer")
        assert not transaction.get_rollback()
        Note.objects.create(title="after")
    assert _titles() == ["after", "outer"]


# -- Django's transaction marked for rollback ---------------------------------------------------


def test_a_joined_scope_refuses_a_transaction_marked_for_rollback() -> None:
    """After an IntegrityError caught inside atomic(), a joined scope refuses to open."""
    with transaction.atomic():
        Note.objects.create(title="first")
        with pytest.raises(IntegrityError):
            Note.objects.create(title="first")
        assert transaction.get_rollback()
        with (
            pytest.raises(TransactionManagementError, match="marked for rollback") as refused,
            session_scope(join_django=True) as session,
        ):
            _insert(session, "would be thrown away")
        assert isinstance(refused.value, TransactionError)
        assert refused.value.pool == "main"
        assert "nested transaction.atomic()" in str(refused.value)
        assert isinstance(refused.value.__cause__, IntegrityError)
        assert transaction.get_rollback()  # still Django's to roll back
    assert _titles() == []


def test_an_orm_error_caught_inside_a_joined_scope_fails_the_scope() -> None:
    """After an ORM error caught inside it, a joined scope refuses statements and its release.

    Its savepoint is rolled back, which undoes the failure, so the atomic block
    around it goes on without the scope's work.
    """
    with transaction.atomic():
        Note.objects.create(title="outer")
        with (
            pytest.raises(JoinedTransactionError, match="marked for rollback"),
            session_scope(join_django=True) as session,
        ):
            _insert(session, "in-scope")
            with pytest.raises(IntegrityError):
                Note.objects.create(title="outer")
            with pytest.raises(TransactionManagementError, match="marked for rollback"):
                _insert(session, "refused")
        assert not transaction.get_rollback()
        Note.objects.create(title="after")
    assert _titles() == ["after", "outer"]


def test_a_nested_scope_over_a_joined_one_fails_after_a_caught_orm_error() -> None:
    """A scope nested in a joined one whose ORM error was caught raises and rolls back its work."""
    with transaction.atomic(), session_scope(join_django=True) as session:
        _insert(session, "outer")
        with pytest.raises(JoinedTransactionError), session_scope():
            _insert(session, "nested")
            with pytest.raises(IntegrityError):
                Note.objects.create(title="outer")
        _insert(session, "after")
    assert _titles() == ["after", "outer"]


# -- commit() and rollback() belong to Django ---------------------------------------------------


def test_commit_and_rollback_are_refused_in_a_joined_scope() -> None:
    """commit() and rollback() raise in a joined scope; its failure still undoes all its work."""
    with transaction.atomic():
        Note.objects.create(title="outer")
        with pytest.raises(ValueError), session_scope(join_django=True) as session:
            _insert(session, "before-commit")
            with pytest.raises(JoinedTransactionError, match="belongs to Django"):
                session.commit()
            with pytest.raises(TransactionManagementError, match="belongs to Django"):
                session.rollback()
            with session_scope() as nested, pytest.raises(JoinedTransactionError):
                nested.commit()
            _insert(session, "after-commit")
            raise ValueError("the scope fails")
    assert _titles() == ["outer"]


def test_a_refused_commit_leaves_the_joined_scope_working() -> None:
    """After a refused commit() the scope goes on, and releases its work when it ends."""
    with transaction.atomic(), session_scope(join_django=True) as session:
        _insert(session, "a")
        with pytest.raises(JoinedTransactionError):
            session.commit()
        _insert(session, "b")
        session.flush()
    assert _titles() == ["a", "b"]


def test_joined_scopes_leave_djangos_connection_as_django_set_it_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Joined scopes add nothing to Django's connection each time they borrow it: no psycopg
    notice handler piling up, no SQLite regexp function replacing Django's."""
    with transaction.atomic():
        Note.objects.create(title="1")
        for _ in range(3):
            with session_scope(join_django=True) as session:
                session.execute(text("SELECT 1"))
        # Django's regexp also takes numbers, as a lookup on an integer column needs.
        assert Note.objects.filter(id__regex=r"^[0-9]+$").count() == 1
        if connection.vendor == "postgresql":
            caplog.set_level("INFO", logger="sqlalchemy.dialects.postgresql")
            with connection.cursor() as cursor:
                cursor.execute("DO $$ BEGIN RAISE NOTICE 'hello from the server'; END $$")
            noticed = [r for r in caplog.records if "hello from the server" in r.getMessage()]
            assert noticed == []
