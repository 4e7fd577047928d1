"""request.adb_session under ASGI (Django's AsyncClient): opened on first use, committed before
the response, rolled back on an exception or a 4xx, a failed commit answered 500."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.http import HttpResponse, StreamingHttpResponse
from django.test import AsyncClient, RequestFactory
from sqlalchemy import exc as sa_exc
from sqlalchemy import text

from mingus_sessions import get_async_engine, on_commit
from mingus_sessions._core.state import state
from mingus_sessions.breakers import breaker_for
from mingus_sessions.middleware import SessionMiddleware
from tests.asyncio.helpers import achecked_out, atitles
from tests.helpers import NoteRow
from tests.scopes.helpers import BACKEND, db, insert

pytestmark = [pytest.mark.asyncio, db]


def _checkouts() -> int:
    return int(state.pools["main"].probe.checkouts)  # type: ignore[attr-defined]


async def test_a_view_that_writes_is_committed_before_its_response() -> None:
    response = await AsyncClient().get("/adb/write/async-kept/")
    assert response.status_code == 200
    assert await atitles() == ["async-kept"]
    assert achecked_out() == 0


async def test_a_view_that_never_uses_it_checks_out_nothing() -> None:
    get_async_engine()  # built, so that a checkout would show in its pool
    before = state.sessions.total_sessions
    response = await AsyncClient().get("/async/no-database/")
    assert response.status_code == 200
    assert state.sessions.total_sessions == before
    assert achecked_out() == 0
    assert get_async_engine().sync_engine.pool.checkedin() == 0  # type: ignore[attr-defined]


@pytest.mark.parametrize("status", [400, 404, 500])
async def test_a_status_of_400_and_above_rolls_back(status: int) -> None:
    response = await AsyncClient().get(f"/adb/write/async-{status}/{status}/")
    assert response.status_code == status
    assert await atitles() == []
    assert achecked_out() == 0


async def test_an_exception_rolls_back() -> None:
    client = AsyncClient(raise_request_exception=False)
    response = await client.get("/adb/write-raise/async-raised/")
    assert response.status_code == 500
    assert await atitles() == []
    assert achecked_out() == 0
    assert state.sessions.failed_sessions >= 1


async def test_a_failed_commit_is_a_500_never_a_2xx() -> None:
    client = AsyncClient(raise_request_exception=False)
    response = await client.get("/adb/duplicate/twice/")
    assert response.status_code == 500
    assert await atitles() == []
    assert achecked_out() == 0


async def test_current_async_session_is_the_requests() -> None:
    response = await AsyncClient().get("/adb/count/")
    assert response.status_code == 200
    assert response.json() == {"count": 0}


async def test_a_streaming_response_commits_when_its_stream_ends() -> None:
    response = await AsyncClient().get("/adb/stream/streamed/")
    assert response.status_code == 200
    body = b"".join([chunk async for chunk in response.streaming_content])
    assert body == b"streamed\n"
    assert await atitles() == ["streamed"]
    assert achecked_out() == 0


async def test_a_sync_only_middleware_after_ours_is_named_once(
    settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Django then runs SessionMiddleware in sync mode: the log says why adb_session is missing."""
    settings.MIDDLEWARE = [*settings.MIDDLEWARE, "tests.asyncio.sync_only.sync_only_middleware"]
    with caplog.at_level(logging.WARNING, logger="mingus_sessions"):
        assert (await AsyncClient().get("/async/no-database/")).status_code == 200
        assert (await AsyncClient().get("/async/no-database/")).status_code == 200
    warnings = [r.getMessage() for r in caplog.records if "sync mode under ASGI" in r.getMessage()]
    assert len(warnings) == 1
    assert "tests.asyncio.sync_only.sync_only_middleware after it is sync-only" in warnings[0]


# -- the ways a request's async scope could be left open (found in review) ------------------


def _middleware(view: Any) -> SessionMiddleware:
    return SessionMiddleware(view)


async def test_a_stream_that_opens_the_session_while_it_streams_is_ended() -> None:
    async def view(request: Any) -> StreamingHttpResponse:
        async def rows() -> AsyncIterator[bytes]:
            await request.adb_session.execute(
                text("INSERT INTO testapp_note (title, body) VALUES ('streamed-lazily', '')")
            )
            yield b"x"

        return StreamingHttpResponse(rows())

    response = await _middleware(view)(RequestFactory().get("/"))
    assert b"".join([chunk async for chunk in response.streaming_content]) == b"x"
    await sync_to_async(response.close)()
    assert achecked_out() == 0
    assert await atitles() == ["streamed-lazily"]


async def test_a_stream_never_started_is_rolled_back_when_the_response_closes() -> None:
    """The client left before the first chunk: Django still closes the response."""

    async def view(request: Any) -> StreamingHttpResponse:
        await request.adb_session.execute(
            text("INSERT INTO testapp_note (title, body) VALUES ('never-sent', '')")
        )

        async def rows() -> AsyncIterator[bytes]:
            yield b"x"

        return StreamingHttpResponse(rows())

    response = await _middleware(view)(RequestFactory().get("/"))
    await sync_to_async(response.close)()
    assert achecked_out() == 0
    assert state.sessions.active_sessions == 0
    assert await atitles() == []


@pytest.mark.skipif(
    BACKEND == "sqlite", reason="two connections writing one table: SQLite's shared cache locks it"
)
async def test_a_failed_async_commit_rolls_the_sync_session_back_too() -> None:
    async def view(request: Any) -> HttpResponse:
        await sync_to_async(insert)(request.db_session, "sync-side")
        session = request.adb_session
        session.add(NoteRow(title="twice", body=""))
        await session.flush()
        session.add(NoteRow(title="twice", body=""))  # fails at the commit's flush
        return HttpResponse("ok")

    with pytest.raises(sa_exc.IntegrityError):
        await _middleware(view)(RequestFactory().get("/"))
    assert await atitles() == []
    assert achecked_out() == 0


async def test_a_breaker_trial_held_by_a_request_is_settled_whatever_its_status() -> None:
    clock = [1000.0]
    breaker = breaker_for("main")
    assert breaker is not None
    breaker._clock = lambda: clock[0]  # type: ignore[method-assign]
    for _ in range(breaker.failure_threshold):
        breaker.record_failure()
    clock[0] += breaker.recovery_timeout + 1  # half-open: the next caller is the trial

    async def view(request: Any) -> HttpResponse:
        await request.adb_session.execute(text("SELECT 1"))  # the database answers
        return HttpResponse(status=404)

    response = await _middleware(view)(RequestFactory().get("/"))
    assert response.status_code == 404
    assert breaker.state == "closed"


async def test_a_trial_that_proves_nothing_goes_to_the_next_caller() -> None:
    clock = [1000.0]
    breaker = breaker_for("main")
    assert breaker is not None
    breaker._clock = lambda: clock[0]  # type: ignore[method-assign]
    for _ in range(breaker.failure_threshold):
        breaker.record_failure()
    clock[0] += breaker.recovery_timeout + 1

    async def view(request: Any) -> HttpResponse:
        request.adb_session.add(NoteRow(title="never flushed", body=""))  # opens, no statement
        return HttpResponse(status=400)

    await _middleware(view)(RequestFactory().get("/"))
    assert breaker.retry_in() == 0  # the trial was given back, not held until it expires


async def test_on_commit_before_the_async_session_opens_waits_for_the_requests_end() -> None:
    ran: list[str] = []

    async def view(request: Any) -> HttpResponse:
        on_commit(lambda: ran.append("after"))
        return HttpResponse("ok")

    await _middleware(view)(RequestFactory().get("/"))
    assert ran == ["after"]
