"""Fork safety of async engines: a child neither uses nor closes the parent loop's connections."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text

from mingus_sessions import asession_scope
from mingus_sessions._core.state import state
from tests.helpers import run_in_a_forked_child

pytestmark = [
    pytest.mark.postgresql,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork()"),
]


async def _backend_pid() -> int:
    async with asession_scope() as session:
        return int((await session.execute(text("SELECT pg_backend_pid()"))).scalar_one())


@pytest.fixture
def parent_loop() -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop running in a thread of the parent, with an async engine of its own."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield loop
    finally:
        # As asyncio.run() ends a loop: its async generators closed (which
        # closes the loop's engines), then the loop.
        asyncio.run_coroutine_threadsafe(loop.shutdown_asyncgens(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
    assert not any(loop is each for each in list(state.async_pools))


def _in(loop: asyncio.AbstractEventLoop, coroutine: Any) -> Any:
    return asyncio.run_coroutine_threadsafe(coroutine, loop).result(10)


def test_a_forked_child_opens_its_own_backend_and_the_parents_keeps_working(
    parent_loop: asyncio.AbstractEventLoop,
) -> None:
    parent_pid = _in(parent_loop, _backend_pid())
    generation = state.async_generation

    def child() -> str:  # pragma: no cover - runs in the child
        assert not state.async_pools, "the parent's async engines were kept"
        assert state.async_generation == generation + 1
        return str(asyncio.run(_backend_pid()))

    reply = run_in_a_forked_child(child)
    assert reply.isdigit(), reply
    assert int(reply) != parent_pid
    # The child dropped the parent's connection without closing it.
    assert _in(parent_loop, _backend_pid()) == parent_pid
