"""request.adb_session under ASGI (Django's AsyncClient): opened on first use, committed before
the response, rolled back on an exception or a 4xx, a failed commit answered 500."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from django.test import AsyncClient

from mingus_sessions import get_async_engine
from mingus_sessions._core.state import state
from tests.asyncio.helpers import achecked_out, atitles
from tests.scopes.helpers import db

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
