"""Views the middleware tests call: each exercises one exit path of a request."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

from asgiref.sync import sync_to_async
from django.http import (
    HttpRequest,
    HttpResponse,
    JsonResponse,
    StreamingHttpResponse,
)
from sqlalchemy import column, select, table, text

from mingus_sessions import current_session, on_commit

NOTES = table("testapp_note", column("title"))

#: Sessions seen by the concurrent view, keyed by the request's marker.
seen_sessions: dict[str, int] = {}
seen_lock = threading.Lock()


def _insert(session: Any, title: str) -> None:
    session.execute(
        text("INSERT INTO testapp_note (title, body) VALUES (:title, '')"), {"title": title}
    )


def write(request: HttpRequest, title: str, status: int = 200) -> HttpResponse:
    _insert(request.db_session, title)  # type: ignore[attr-defined]
    return HttpResponse("written", status=status)


def write_with_current(request: HttpRequest, title: str) -> HttpResponse:
    session = current_session()
    assert request.db_session == session  # type: ignore[attr-defined]  # the lazy proxy
    _insert(session, title)
    return HttpResponse("written")


def write_then_raise(request: HttpRequest, title: str) -> HttpResponse:
    _insert(request.db_session, title)  # type: ignore[attr-defined]
    raise ValueError("the view failed after writing")


def no_database(request: HttpRequest) -> HttpResponse:
    return HttpResponse("no database")


def orphan_child(request: HttpRequest) -> HttpResponse:
    """Insert a row whose deferred foreign key fails only at COMMIT."""
    request.db_session.execute(  # type: ignore[attr-defined]
        text("INSERT INTO mw_child (id, note_id) VALUES (1, 999999)")
    )
    return HttpResponse("looks fine until commit")


def stream_titles(request: HttpRequest, title: str) -> StreamingHttpResponse:
    """Write a row, then stream every title, reading the database while streaming."""
    session = request.db_session  # type: ignore[attr-defined]
    _insert(session, title)

    def rows() -> Iterator[bytes]:
        result = session.execute(text("SELECT title FROM testapp_note ORDER BY title"))
        for (found,) in result:
            yield found.encode() + b"\n"

    return StreamingHttpResponse(rows())


def export_titles(request: HttpRequest) -> StreamingHttpResponse:
    """docs/web.md's streaming export: the rows are fetched in batches while the body is sent."""
    session = request.db_session  # type: ignore[attr-defined]

    def rows() -> Iterator[bytes]:
        statement = select(NOTES.c.title).order_by(NOTES.c.title)
        result = session.execute(statement.execution_options(yield_per=100))
        for (title,) in result:
            yield title.encode() + b"\n"

    return StreamingHttpResponse(rows())


def concurrent(request: HttpRequest, marker: str) -> JsonResponse:
    session = request.db_session  # type: ignore[attr-defined]
    session.execute(text("SELECT 1"))
    time.sleep(0.05)  # hold the connection so that requests overlap
    with seen_lock:
        seen_sessions[marker] = id(session._wrapped)  # type: ignore[attr-defined]
    return JsonResponse({"marker": marker})


async def async_write(request: HttpRequest, title: str) -> HttpResponse:
    # Sync SQLAlchemy from an async view: run it in a thread, never on the loop.
    await sync_to_async(_insert)(request.db_session, title)  # type: ignore[attr-defined]
    return HttpResponse("written asynchronously")


async def async_write_with_current(request: HttpRequest, title: str) -> HttpResponse:
    def work() -> None:
        _insert(current_session(), title)

    await sync_to_async(work)()
    return HttpResponse("written asynchronously")


async def async_no_database(request: HttpRequest) -> HttpResponse:
    return HttpResponse("no database")


async def async_write_then_fail(request: HttpRequest, title: str) -> HttpResponse:
    await sync_to_async(_insert)(request.db_session, title)  # type: ignore[attr-defined]
    return HttpResponse("bad input", status=422)


async def async_stream(request: HttpRequest, title: str) -> StreamingHttpResponse:
    session = request.db_session  # type: ignore[attr-defined]
    await sync_to_async(_insert)(session, title)

    async def rows() -> AsyncIterator[bytes]:
        titles = await sync_to_async(
            lambda: session.execute(text("SELECT title FROM testapp_note")).scalars().all()
        )()
        for found in titles:
            yield found.encode() + b"\n"

    return StreamingHttpResponse(rows())


callbacks_run: list[int | str] = []


def on_commit_only(request: HttpRequest, status: int) -> HttpResponse:
    """Register an after-commit callback without touching the database."""
    on_commit(lambda: callbacks_run.append(status))
    return HttpResponse("registered", status=status)


def commit_midway(request: HttpRequest, outcome: str) -> HttpResponse:
    """Commit by hand, then go on and end as ``outcome`` asks: "raise" or a status code.

    The callback registered before the view's own commit belongs to it; the
    one registered after waits for the request's end, which rolls back.
    """
    session = request.db_session  # type: ignore[attr-defined]
    _insert(session, "midway")
    on_commit(lambda: callbacks_run.append("midway"))
    session.commit()
    _insert(session, "lost")
    on_commit(lambda: callbacks_run.append("lost"))
    if outcome == "raise":
        raise ValueError("the view fails after its own commit")
    return HttpResponse("refused", status=int(outcome))


def commit_when_asked(request: HttpRequest, response: HttpResponse) -> bool:
    """REQUEST_COMMIT_HOOK for the tests: commit only when the client asks."""
    return request.headers.get("X-Commit") == "yes"


# -- views of request.adb_session (tests/asyncio/test_middleware.py) ------------------------

#: Set by the slow async view once its row is written, awaited by the cancellation tests.
adb_wrote = threading.Event()


async def adb_write(request: HttpRequest, title: str, status: int = 200) -> HttpResponse:
    await request.adb_session.execute(  # type: ignore[attr-defined]
        text("INSERT INTO testapp_note (title, body) VALUES (:title, '')"), {"title": title}
    )
    return HttpResponse("written with adb_session", status=status)


async def adb_write_then_raise(request: HttpRequest, title: str) -> HttpResponse:
    await adb_write(request, title)
    raise ValueError("the async view fails after writing")


async def adb_write_then_wait(request: HttpRequest, title: str) -> HttpResponse:
    """Write, then wait long: the client is meant to go away meanwhile."""
    import asyncio

    await adb_write(request, title)
    adb_wrote.set()
    await asyncio.sleep(30)
    return HttpResponse("the client waited")


async def adb_duplicate(request: HttpRequest, title: str) -> HttpResponse:
    """Two writes of one title: the unique violation surfaces at the commit's flush."""
    from tests.helpers import NoteRow

    session = request.adb_session  # type: ignore[attr-defined]
    session.add(NoteRow(title=title, body=""))
    await session.flush()
    session.add(NoteRow(title=title, body=""))  # flushed by the middleware's commit
    return HttpResponse("the commit will fail")


async def adb_count(request: HttpRequest) -> JsonResponse:
    from mingus_sessions import current_async_session

    session = current_async_session()
    assert session is request.adb_session.async_session  # type: ignore[attr-defined]
    found = await session.execute(text("SELECT count(*) FROM testapp_note"))
    return JsonResponse({"count": found.scalar_one()})


async def adb_stream(request: HttpRequest, title: str) -> StreamingHttpResponse:
    session = request.adb_session  # type: ignore[attr-defined]
    await adb_write(request, title)

    async def rows() -> AsyncIterator[bytes]:
        found = await session.execute(text("SELECT title FROM testapp_note ORDER BY title"))
        for each in found.scalars():
            yield each.encode() + b"\n"

    return StreamingHttpResponse(rows())


async def adb_pool(request: HttpRequest) -> JsonResponse:
    """This server loop's async pool of "main": what is checked out right now."""
    from mingus_sessions import get_async_engine
    from mingus_sessions._core.state import state

    pool = get_async_engine().sync_engine.pool
    return JsonResponse(
        {
            "checked_out": pool.checkedout(),  # type: ignore[attr-defined]
            "idle": pool.checkedin(),  # type: ignore[attr-defined]
            "sessions": state.sessions.snapshot(),
        }
    )
