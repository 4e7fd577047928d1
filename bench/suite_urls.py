"""The views ``bench.bench_suite`` requests: the same ``SELECT 1`` done four ways, and none."""

from __future__ import annotations

from django.db import connections
from django.http import HttpRequest, HttpResponse
from django.urls import path
from sqlalchemy import text
from sqlalchemy.orm import Session

from mingus_sessions import current_session, get_engine

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


def no_database(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok")


urlpatterns = [
    path("scoped", request_scoped),
    path("hand-written", hand_written),
    path("django-new-connection", django_db("default")),
    path("django-persistent", django_db("persistent")),
    path("no-database", no_database),
]
