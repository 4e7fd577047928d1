"""Views and URLs of the debug-toolbar panel's tests (tests/surfaces/test_debug_toolbar.py).

Named in ROOT_URLCONF by those tests once the toolbar's settings are in
force. ``urlpatterns`` is made when the resolver first asks for it: including
``debug_toolbar.urls`` imports the toolbar's models, which exist only while
``debug_toolbar`` is installed, and the panels DEBUG_TOOLBAR_PANELS names then.
"""

from __future__ import annotations

import threading
from typing import Any

from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.urls import include, path
from sqlalchemy import Engine, text

from mingus_sessions import get_engine, session_scope
from tests.testapp.models import Note

#: What the parameters tests look for: it is only ever a bound parameter.
SECRET = "bound-parameter-never-shown"

#: The connection events the panel listens to; with the dialect's handle_error
#: and the pool's checkout, what an engine carries only while a request is
#: instrumented.
CONNECTION_EVENTS = (
    "before_cursor_execute",
    "after_cursor_execute",
    "begin",
    "commit",
    "rollback",
    "savepoint",
    "release_savepoint",
    "rollback_savepoint",
)

#: The concurrent view's two requests meet here, so that their statements interleave.
meeting: threading.Barrier | None = None


def _page(body: str) -> HttpResponse:
    # The toolbar inserts itself before </body> of an HTML page.
    return HttpResponse(f"<html><body>{body}</body></html>")


def two_pools(request: HttpRequest) -> HttpResponse:
    """Statements on "main" (with a savepoint released and one rolled back) and on "other"."""
    with session_scope() as session:
        session.execute(text("SELECT :value AS marker"), {"value": SECRET})
        with session_scope() as nested:
            nested.execute(text("SELECT 2"))
        try:
            with session_scope() as failing:
                failing.execute(text("SELECT 3"))
                raise LookupError("rolls back the inner savepoint only")
        except LookupError:
            pass
    with session_scope("other") as other:
        other.execute(text("SELECT 4"))
    return _page("two pools")


def no_sqlalchemy(request: HttpRequest) -> HttpResponse:
    """A view that runs nothing through SQLAlchemy (the ORM only)."""
    Note.objects.filter(title="nothing").exists()
    return _page("orm only")


def joined(request: HttpRequest) -> HttpResponse:
    """A joined scope inside Django's atomic block: SQLAlchemy on Django's connection."""
    with transaction.atomic():
        Note.objects.create(title="orm-in-atomic")
        with session_scope(join_django=True) as session:
            session.execute(text("SELECT title FROM testapp_note WHERE title = 'joined-marker'"))
    return _page("joined")


def failing(request: HttpRequest) -> HttpResponse:
    """A statement that fails: recorded with its error, and its transaction rolled back."""
    try:
        with session_scope() as session:
            session.execute(text("SELECT * FROM no_such_table_for_the_toolbar"))
    except Exception:
        return _page("failed as expected")
    return _page("did not fail")


def concurrent(request: HttpRequest, marker: str) -> HttpResponse:
    """Two of these run at once; each waits for the other between its two statements."""
    assert meeting is not None
    with session_scope() as session:
        session.execute(text(f"SELECT '{marker}-first'"))
        meeting.wait(timeout=10)
        session.execute(text(f"SELECT '{marker}-second'"))
    meeting.wait(timeout=10)
    return _page(marker)


def listener_counts(engine: Engine) -> list[int]:
    """How many listeners ``engine`` has on each event the panel uses."""
    counts = [len(getattr(engine.dispatch, name)) for name in CONNECTION_EVENTS]
    dialect, pool = engine.dialect.dispatch, engine.pool.dispatch
    return [*counts, len(dialect.handle_error), len(pool.checkout)]


def listening(request: HttpRequest) -> HttpResponse:
    """How many listeners the default pool's engine has, per event the panel uses, right now."""
    return _page(f"listeners={listener_counts(get_engine())}".replace(" ", ""))


def __getattr__(name: str) -> Any:
    if name != "urlpatterns":
        raise AttributeError(name)
    return [
        path("listening/", listening),
        path("two-pools/", two_pools),
        path("no-sqlalchemy/", no_sqlalchemy),
        path("joined/", joined),
        path("failing/", failing),
        path("concurrent/<str:marker>/", concurrent),
        path("__debug__/", include("debug_toolbar.urls")),
    ]
