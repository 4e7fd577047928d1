"""Two tasks on one AsyncSession are refused; aexecute_with_retry retries transient failures."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from mingus_sessions import (
    ConcurrentSessionUseError,
    SessionError,
    aexecute_with_retry,
    asession_scope,
)
from mingus_sessions._core.state import state
from tests.asyncio.helpers import achecked_out
from tests.scopes.helpers import BACKEND, db

pytestmark = [pytest.mark.asyncio, db]

SLEEP = {
    "postgresql": "SELECT pg_sleep(0.3)",
    "mysql": "SELECT SLEEP(0.3)",
}


@pytest.mark.skipif(BACKEND not in SLEEP, reason="needs a server-side sleep")
async def test_a_second_task_on_a_busy_session_is_refused() -> None:
    async with asession_scope() as session:
        first = asyncio.create_task(session.execute(text(SLEEP[BACKEND])))
        await asyncio.sleep(0.05)  # the first task is inside execute() now
        with pytest.raises(ConcurrentSessionUseError, match="still using the session") as raised:
            await session.execute(text("SELECT 1"))
        assert isinstance(raised.value, SessionError)
        await first
        # Once the first is done, the session serves again.
        assert (await session.execute(text("SELECT 1"))).scalar_one() == 1
    assert achecked_out() == 0


async def test_one_task_awaiting_in_turn_is_fine() -> None:
    async with asession_scope() as session:
        for _ in range(3):
            assert (await session.execute(text("SELECT 1"))).scalar_one() == 1


async def test_transient_failures_are_retried_then_succeed() -> None:
    calls = 0
    slept: list[float] = []

    async def sleep(delay: float) -> None:
        slept.append(delay)

    async def operation() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise OperationalError("SELECT 1", {}, Exception("server closed the connection"))
        async with asession_scope() as session:
            return str((await session.execute(text("SELECT 'done'"))).scalar_one())

    before = state.sessions.retries
    result = await aexecute_with_retry(operation, max_retries=3, base_delay=0.01, sleep=sleep)
    assert result == "done"
    assert calls == 3
    assert len(slept) == 2
    assert state.sessions.retries - before == 2


async def test_a_permanent_failure_is_raised_at_once() -> None:
    calls = 0

    async def operation() -> None:
        nonlocal calls
        calls += 1
        raise ValueError("bad input")

    with pytest.raises(ValueError, match="bad input"):
        await aexecute_with_retry(operation, max_retries=5, base_delay=0)
    assert calls == 1


async def test_a_bad_policy_is_refused_before_the_first_call() -> None:
    async def operation() -> None:
        raise AssertionError("never called")

    with pytest.raises(ValueError, match="max_retries"):
        await aexecute_with_retry(operation, max_retries=-1)
