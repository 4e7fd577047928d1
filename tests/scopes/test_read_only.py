"""``session_scope(read_only=True)`` on a pool without replicas: the pool's own database, read-only.

On every backend the scope's transaction refuses writes with
``ReadOnlyTransactionError`` (PostgreSQL: the driver's BEGIN READ ONLY;
MariaDB: SET TRANSACTION READ ONLY; SQLite: query_only), nothing of it is
committed, and the connection goes back writable for the next scope. The
arguments that cannot work together are refused before anything opens.
"""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select, text

from mingus_sessions import (
    ReadOnlyTransactionError,
    asession_scope,
    get_circuit_breaker,
    get_engine,
    is_transient,
    last_commit_token,
    session_scope,
)
from tests.helpers import NoteRow

pytestmark = pytest.mark.django_db(transaction=True)


def count_notes() -> int:
    with session_scope() as session:
        return int(session.scalar(select(func.count()).select_from(NoteRow)) or 0)


def test_a_read_only_scope_reads() -> None:
    with session_scope() as session:
        session.add(NoteRow(title="written"))
    with session_scope(read_only=True) as session:
        assert session.scalars(select(NoteRow.title)).all() == ["written"]


@pytest.mark.parametrize("how", ["orm", "text"])
def test_a_write_in_a_read_only_scope_fails_and_nothing_is_kept(how: str) -> None:
    with pytest.raises(ReadOnlyTransactionError) as info, session_scope(read_only=True) as session:
        if how == "orm":
            session.add(NoteRow(title="refused"))
            session.flush()
        else:
            session.execute(text("INSERT INTO testapp_note (title, body) VALUES ('x', '')"))
    error = info.value
    assert "read-only transaction" in str(error)
    assert "without read_only" in str(error)
    assert not is_transient(error)
    assert get_circuit_breaker("main").failures == 0, "a refused write is no outage"
    assert count_notes() == 0
    # The connection went back writable: the next scope writes on it.
    with session_scope() as session:
        session.add(NoteRow(title="after"))
    assert count_notes() == 1
    assert get_engine().pool.checkedout() == 0


def test_a_scope_nested_in_a_read_only_one_is_read_only_too() -> None:
    with (
        pytest.raises(ReadOnlyTransactionError),
        session_scope(read_only=True),
        session_scope() as inner,
    ):
        inner.add(NoteRow(title="refused"))
        inner.flush()
    assert count_notes() == 0


def test_a_read_only_scope_nested_in_a_writing_one_sees_its_writes() -> None:
    """A savepoint of the outer session: the same transaction, its uncommitted writes."""
    with session_scope() as outer:
        outer.add(NoteRow(title="uncommitted"))
        outer.flush()
        with session_scope(read_only=True) as inner:
            assert inner is outer
            assert inner.scalars(select(NoteRow.title)).all() == ["uncommitted"]
    assert count_notes() == 1


def test_without_replicas_no_commit_position_is_kept() -> None:
    with session_scope() as session:
        session.add(NoteRow(title="written"))
    assert last_commit_token() is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"after": "0/16B3748"}, "pass read_only=True with it"),
        ({"read_only": True, "join_django": True}, "cannot be combined"),
        ({"read_only": True, "after": "yesterday"}, "is not a commit token"),
        ({"read_only": True, "after": "0/16B3748/1"}, "is not a commit token"),
    ],
)
def test_arguments_that_cannot_hold_are_refused_before_opening(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        session_scope(**kwargs)  # type: ignore[arg-type]
    assert get_engine().pool.checkedout() == 0


def test_an_async_read_only_scope_refuses_writes() -> None:
    async def scenario() -> list[str]:
        async with asession_scope() as session:
            session.add(NoteRow(title="async"))
        with pytest.raises(ReadOnlyTransactionError):
            async with asession_scope(read_only=True) as session:
                await session.execute(
                    text("INSERT INTO testapp_note (title, body) VALUES ('x', '')")
                )
        async with asession_scope(read_only=True) as session:
            return list((await session.scalars(select(NoteRow.title))).all())

    assert asyncio.run(scenario()) == ["async"]
    assert count_notes() == 1
