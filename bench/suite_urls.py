"""The views ``bench.bench_suite`` requests: the same ``SELECT 1`` done five ways, and none.

The async views (``bench/async_rows.py``, served through Django's ASGI
handler) do it twice: through ``request.adb_session`` and a hand-written
``AsyncSession``; and one of them never touches the database.
"""

from __future__ import annotations

from typing import Any

from django.db import connections
from django.http import HttpRequest, HttpResponse
from django.urls import path
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from mingus_sessions import current_session, get_async_engine, get_engine

SELECT_1 = text("SELECT 1")


def request_scoped(request: HttpRequest) -> HttpResponse:
    """The request's session, opened by SessionMiddleware on first use."""
    return HttpResponse(str(current_session().execute(SELECT_1).scalar_one()))


def hand_written(request: HttpRequest) -> HttpResponse:
    """A session written out by hand on the same engine, as code without the app would."""
    with Session(get_engine()) as session, session.begin():
        value = session.execute(SELECT_1).scalar_one()
    return HttpResponse(str(value))


def django_db(alias: str):  # type: ignore[no-untyped-def]
    def view(request: HttpRequest) -> HttpResponse:
        with connections[alias].cursor() as cursor:
            cursor.execute("SELECT 1")
            (value,) = cursor.fetchone()
        return HttpResponse(str(value))

    return view


class KeptConnection:
    """One driver connection opened on first use and kept: no pool, no pre-ping, no ORM."""

    def __init__(self) -> None:
        self.connection: Any = None

    def get(self) -> Any:
        if self.connection is None:
            engine = get_engine()
            cargs, cparams = engine.dialect.create_connect_args(engine.url)
            self.connection = engine.dialect.loaded_dbapi.connect(*cargs, **cparams)
        return self.connection

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None


KEPT = KeptConnection()


def raw_transaction(request: HttpRequest) -> HttpResponse:
    """The least a transaction per request can cost: BEGIN, the statement, COMMIT."""
    connection = KEPT.get()
    cursor = connection.cursor()
    cursor.execute("SELECT 1")  # the driver sends BEGIN first: it is not in autocommit
    (value,) = cursor.fetchone()
    connection.commit()
    return HttpResponse(str(value))


def no_database(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok")


async def async_scoped(request: HttpRequest) -> HttpResponse:
    """The request's async session, opened by SessionMiddleware on first use."""
    result = await request.adb_session.execute(SELECT_1)  # type: ignore[attr-defined]
    return HttpResponse(str(result.scalar_one()))


async def async_hand_written(request: HttpRequest) -> HttpResponse:
    """An async session written out by hand on the same async engine."""
    async with AsyncSession(get_async_engine()) as session, session.begin():
        value = (await session.execute(SELECT_1)).scalar_one()
    return HttpResponse(str(value))


async def async_no_database(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok")


urlpatterns = [
    path("scoped", request_scoped),
    path("hand-written", hand_written),
    path("django-new-connection", django_db("default")),
    path("django-persistent", django_db("persistent")),
    path("raw-transaction", raw_transaction),
    path("no-database", no_database),
    path("async/scoped", async_scoped),
    path("async/hand-written", async_hand_written),
    path("async/no-database", async_no_database),
]
