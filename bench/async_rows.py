"""What async sessions cost: our async scope and request session against hand-written ones.

Rows of ``bench.bench_suite`` (``--only async`` prints them alone), on the
suite's pool "main" (``PRE_PING: True``, MONITORING on), through the async
engine we build for it (``postgresql+psycopg_async``):

1. ``asession_scope()`` ``SELECT 1`` against a hand-written
   ``AsyncSession(get_async_engine())`` with ``async with session.begin():``
   doing the same, on the same async engine: at most 1.05;
2. an async view using ``request.adb_session`` for one ``SELECT 1``, through
   the suite's middleware, against the same view with a hand-written async
   session and no ``SessionMiddleware``: at most 1.05;
3. an async view that never touches the database, with against without our
   middleware: at most 50 µs more per request (the difference, paired round by
   round, is judged; the ratio is shown), with zero checkouts;
4. the async scope of row 1 against a sync ``session_scope()`` ``SELECT 1``
   called from async code through ``sync_to_async`` (what async code did before
   there were async sessions): reported.

Each row runs in one event loop of its own (an ``asyncio.Runner``): both sides,
the warm-up and every round, so the per-loop async engine is built and warmed
once and then shared by both sides; the loop shuts down, and the engine is
disposed of, at the end of the row. A round is one ``Runner.run`` of ``n``
operations, a few tens of µs of loop overhead over several milliseconds.

Requests are served by Django's ``ASGIHandler`` called as an ASGI server calls
it (a scope, ``receive`` and ``send``), on the suite's middleware with and
without ours: the same driver for both sides, with what Django itself does
per ASGI request (its request_started/finished signals and the response's
close run through ``sync_to_async``) on both.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any

from bench.rows import Operation, Row, judged, paired

OUR_MIDDLEWARE = "mingus_sessions.middleware.SessionMiddleware"

AsyncOperation = Callable[[int], Coroutine[Any, Any, None]]

#: What the middleware may add to an async request that never uses the database, in µs.
NO_DATABASE_BUDGET_US = 50.0
#: The view without the database gets this many times the rounds of the other rows: the
#: budget is about 1.5% of a request, inside one round's noise from Django's thread hops.
NO_DATABASE_ROUNDS_FACTOR = 3


@contextmanager
def one_loop() -> Iterator[Callable[[AsyncOperation], Operation]]:
    """An event loop for a whole row; gives a function making an async operation a timed one."""
    with asyncio.Runner() as runner:

        def in_loop(operation: AsyncOperation) -> Operation:
            def run(n: int) -> None:
                runner.run(operation(n))

            return run

        yield in_loop


# -- what is timed ----------------------------------------------------------------------------


def ascope_loop() -> AsyncOperation:
    from sqlalchemy import text

    from mingus_sessions import asession_scope

    select_1 = text("SELECT 1")

    async def run(n: int) -> None:
        for _ in range(n):
            async with asession_scope() as session:
                await session.execute(select_1)

    return run


def hand_written_async_loop() -> AsyncOperation:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import AsyncSession

    from mingus_sessions import get_async_engine

    select_1 = text("SELECT 1")

    async def run(n: int) -> None:
        engine = get_async_engine()  # the running loop's, as the scope's is
        for _ in range(n):
            async with AsyncSession(engine) as session, session.begin():
                await session.execute(select_1)

    return run


def sync_scope_from_async_loop() -> AsyncOperation:
    """A sync ``session_scope()`` ``SELECT 1`` awaited through ``sync_to_async``, one per call."""
    from asgiref.sync import sync_to_async

    from bench.bench_suite import scope_loop

    one_scope = sync_to_async(scope_loop())

    async def run(n: int) -> None:
        for _ in range(n):
            await one_scope(1)

    return run


def asgi_handler(middleware: list[str]) -> Any:
    """Django's ASGI handler with exactly ``middleware``."""
    from django.core.handlers.asgi import ASGIHandler
    from django.test.utils import override_settings

    with override_settings(MIDDLEWARE=middleware):
        return ASGIHandler()


def asgi_handlers() -> tuple[Any, Any]:
    """Django's ASGI handler on the suite's stack (with SessionMiddleware), and one without it."""
    from django.conf import settings

    others = [m for m in settings.MIDDLEWARE if not m.startswith("mingus_sessions.")]
    return asgi_handler(list(settings.MIDDLEWARE)), asgi_handler(others)


def http_scope(path: str) -> dict[str, Any]:
    """The ASGI scope of a plain ``GET /path`` from a local client."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": f"/{path}",
        "raw_path": f"/{path}".encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1")],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 80),
    }


def asgi_request_loop(handler: Any, path: str) -> AsyncOperation:
    """GET ``path`` through ``handler`` as an ASGI server would: one HTTP connection per request."""
    scope = http_scope(path)
    request_message = {"type": "http.request", "body": b"", "more_body": False}
    statuses: list[int] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    async def run(n: int) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(n):
            pending = [request_message]
            # The client stays until the response is sent; Django then stops listening.
            stays = loop.create_future()

            async def receive(pending: list[Any] = pending, stays: Any = stays) -> Any:
                if pending:
                    return pending.pop()
                return await stays

            await handler(dict(scope), receive, send)
        if statuses[-1] != 200:
            raise RuntimeError(f"GET /{path} answered {statuses[-1]}")
        statuses.clear()

    return run


def chain_request_loop(handler: Any, path: str) -> AsyncOperation:
    """GET ``path`` through ``handler``'s middleware and view alone, as its ``handle`` does.

    Without what the ASGI handler adds around them (reading the body, the
    request_started and request_finished signals and the response's close,
    two thread hops): on a stack of async middleware nothing here leaves the
    loop, so what a middleware adds shows above the noise.
    """
    import io

    from django.core.handlers.asgi import ASGIRequest

    scope = http_scope(path)

    async def run(n: int) -> None:
        response = None
        for _ in range(n):
            response = await handler.get_response_async(ASGIRequest(scope, io.BytesIO()))
        if response is not None and response.status_code != 200:
            raise RuntimeError(f"GET /{path} answered {response.status_code}")

    return run


# -- the comparisons --------------------------------------------------------------------------


def compare_scopes(rounds: int, verbose: bool) -> Row:
    with one_loop() as in_loop:
        row = paired(
            in_loop(ascope_loop()), in_loop(hand_written_async_loop()), 200, rounds, verbose
        )
    return judged(
        row,
        "asession_scope() SELECT 1 vs hand-written AsyncSession, same engine",
        "<= 1.05",
        row.ratio <= 1.05,
    )


def compare_requests(rounds: int, verbose: bool) -> list[Row]:
    from mingus_sessions.metrics import get_pool_metrics

    with_app, without = asgi_handlers()
    found = []
    with one_loop() as in_loop:
        # Django's thread hops make these requests noisy (±15% a round): the
        # rounds are tripled, as for the view without the database.
        precise = rounds * NO_DATABASE_ROUNDS_FACTOR
        row = paired(
            in_loop(asgi_request_loop(with_app, "async/scoped")),
            in_loop(asgi_request_loop(without, "async/hand-written")),
            40,
            precise,
            verbose,
        )
        row.notes.append(f"{precise} rounds; the suite's middleware stack, through ASGIHandler")
        found.append(
            judged(
                row,
                "async request: request.adb_session SELECT 1 vs hand-written",
                "<= 1.05",
                row.ratio <= 1.05,
            )
        )
        # The same two views with ours the only middleware against none, through
        # the middleware chain alone: nothing leaves the loop but the queries.
        row = paired(
            in_loop(chain_request_loop(asgi_handler([OUR_MIDDLEWARE]), "async/scoped")),
            in_loop(chain_request_loop(asgi_handler([]), "async/hand-written")),
            200,
            rounds,
            verbose,
        )
        row.notes.append("no ASGI handler around it: the middleware and the view alone")
        found.append(
            judged(
                row,
                "async request SELECT 1, ours the only middleware, chain only",
                "<= 1.05",
                row.ratio <= 1.05,
            )
        )
        before = get_pool_metrics("main").checkouts
        row = paired(
            in_loop(asgi_request_loop(asgi_handler([OUR_MIDDLEWARE]), "async/no-database")),
            in_loop(asgi_request_loop(asgi_handler([]), "async/no-database")),
            100,
            precise,
            verbose,
        )
        checkouts = get_pool_metrics("main").checkouts - before
        added = row.difference_us
        row.notes.append(f"{precise} rounds; adds {added:.1f} µs per request (median of A - B)")
        row.notes.append("through ASGIHandler, ours the only middleware against none")
        row.notes.append(f"checkouts during it: {checkouts}")
        found.append(
            judged(
                row,
                "async request, view without the database: with vs without",
                f"<= +{NO_DATABASE_BUDGET_US:.0f} µs, 0 checkouts",
                added <= NO_DATABASE_BUDGET_US and checkouts == 0,
            )
        )
        row = paired(
            in_loop(asgi_request_loop(with_app, "async/no-database")),
            in_loop(asgi_request_loop(without, "async/no-database")),
            40,
            precise,
            verbose,
        )
        row.notes.append(
            f"{precise} rounds; adds {row.difference_us:.1f} µs (median of A - B), within "
            "the noise of the stack's thread hops"
        )
        found.append(judged(row, "the same behind the suite's middleware stack", "reported", None))
        # The same view with ours as the only middleware against none, through
        # the middleware chain alone: no thread hop on either side.
        row = paired(
            in_loop(chain_request_loop(asgi_handler([OUR_MIDDLEWARE]), "async/no-database")),
            in_loop(chain_request_loop(asgi_handler([]), "async/no-database")),
            1000,
            rounds,
            verbose,
        )
        added = row.difference_us
        row.notes.append(f"adds {added:.1f} µs per request (median of A - B)")
        row.notes.append("no ASGI handler around it, nothing off the loop: the middleware alone")
        found.append(
            judged(
                row,
                "the same, ours the only middleware, middleware chain only",
                f"<= +{NO_DATABASE_BUDGET_US:.0f} µs",
                added <= NO_DATABASE_BUDGET_US,
            )
        )
    return found


def compare_with_sync_to_async(rounds: int, verbose: bool) -> Row:
    with one_loop() as in_loop:
        row = paired(
            in_loop(ascope_loop()), in_loop(sync_scope_from_async_loop()), 100, rounds, verbose
        )
    row.notes.append("B: session_scope() in sync_to_async, one thread hop per scope")
    return judged(
        row, "asession_scope() SELECT 1 vs sync session_scope() via sync_to_async", "reported", None
    )


def rows(rounds: int, verbose: bool) -> list[Row]:
    found = [compare_scopes(rounds, verbose)]
    found += compare_requests(rounds, verbose)
    found.append(compare_with_sync_to_async(rounds, verbose))
    return found
