"""The async rows' driver and arithmetic (``bench/async_rows.py``), without a database."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bench import async_rows, bench_suite
from bench.rows import paired


def fake_app(status: int, seen: list[Any]) -> Any:
    """An ASGI app that reads the request, answers ``status`` and notes what it received."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append((scope["path"], await receive()))
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        # The client has not left: a second receive waits until the app stops listening.
        listening = asyncio.ensure_future(receive())
        await asyncio.sleep(0)
        assert not listening.done()
        listening.cancel()

    return app


def test_the_asgi_driver_sends_one_request_per_connection() -> None:
    seen: list[Any] = []
    with async_rows.one_loop() as in_loop:
        in_loop(async_rows.asgi_request_loop(fake_app(200, seen), "async/x"))(3)
    assert [path for path, _ in seen] == ["/async/x"] * 3
    assert all(message["type"] == "http.request" for _, message in seen)


def test_the_asgi_driver_refuses_an_answer_other_than_200() -> None:
    with async_rows.one_loop() as in_loop, pytest.raises(RuntimeError, match="answered 404"):
        in_loop(async_rows.asgi_request_loop(fake_app(404, []), "missing"))(1)


def test_one_loop_runs_every_round_in_the_same_loop() -> None:
    """The async engine is per loop: both sides and all rounds must share one."""
    loops: set[int] = set()

    async def note(n: int) -> None:
        loops.add(id(asyncio.get_running_loop()))

    with async_rows.one_loop() as in_loop:
        paired(in_loop(note), in_loop(note), 1, 4, verbose=False)
    assert len(loops) == 1


def test_difference_is_paired_by_round() -> None:
    """What A adds is the median of the rounds' A - B, not the difference of the medians."""
    row = paired(lambda n: None, lambda n: None, 1, 3, verbose=False)
    row.a_rounds, row.b_rounds = [10.0, 30.0, 40.0], [9.0, 20.0, 35.0]
    assert row.difference_us == 5.0  # the medians' difference would be 10


def test_paired_keeps_each_rounds_figures() -> None:
    row = paired(lambda n: None, lambda n: None, 1, 5, verbose=False)
    assert len(row.a_rounds) == len(row.b_rounds) == 5


def test_only_async_parses() -> None:
    assert bench_suite.parse_args(["--only", "async"]).only == "async"
