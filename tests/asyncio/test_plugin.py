"""The pytest plugin's sa_asession: the joined test session, awaited, and what nests in it.

The ORM writes below happen in sync fixtures: under pytest-asyncio, Django's
async ORM (``acreate``) runs in another thread, on another connection, outside
the test's transaction (as it does for any async test outside Django's own
test case); docs/async.md says so.
"""

from __future__ import annotations

import pytest
from django.db import connections
from django.test import AsyncClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from mingus_sessions import asession_scope, current_async_session
from tests.testapp.models import Note

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db]


@pytest.fixture
def django_connection(db: None) -> object:
    """The test's DB-API connection, after the ORM wrote a row on it in the test's transaction.

    Read here, in the test's thread: in async code ``connections`` gives
    another object.
    """
    Note.objects.create(title="from the orm")
    return connections["default"].connection


async def titles(session: AsyncSession) -> list[str]:
    found = await session.execute(text("SELECT title FROM testapp_note ORDER BY title"))
    return list(found.scalars())


async def test_sa_asession_runs_on_djangos_connection_in_the_tests_transaction(
    django_connection: object, sa_asession: AsyncSession
) -> None:
    assert await titles(sa_asession) == ["from the orm"]
    raw = sa_asession.sync_session.connection().connection.dbapi_connection
    assert raw is django_connection
    with pytest.raises(NotImplementedError, match=r"sync_session\.connection"):
        await sa_asession.connection()
    await sa_asession.execute(text("INSERT INTO testapp_note (title, body) VALUES ('sa', '')"))
    assert (await sa_asession.scalar(text("SELECT count(*) FROM testapp_note"))) == 2
    found = await sa_asession.scalars(text("SELECT title FROM testapp_note WHERE title = 'sa'"))
    assert list(found) == ["sa"]


async def test_code_under_test_nests_in_it(sa_asession: AsyncSession) -> None:
    async with asession_scope() as session:
        assert session is sa_asession
        assert current_async_session() is sa_asession
        await session.execute(text("INSERT INTO testapp_note (title, body) VALUES ('kept', '')"))
    with pytest.raises(ValueError):
        async with asession_scope() as session:
            await session.execute(
                text("INSERT INTO testapp_note (title, body) VALUES ('undone', '')")
            )
            raise ValueError
    assert await titles(sa_asession) == ["kept"]


async def test_an_async_view_served_in_the_test_joins_it(sa_asession: AsyncSession) -> None:
    response = await AsyncClient().get("/adb/write/served/")
    assert response.status_code == 200
    assert await titles(sa_asession) == ["served"]
    response = await AsyncClient().get("/adb/write/refused/400/")
    assert response.status_code == 400
    assert await titles(sa_asession) == ["served"]


async def test_after_a_test_nothing_is_left(sa_asession: AsyncSession) -> None:
    """The rows of the tests above rolled back with them."""
    assert await titles(sa_asession) == []
