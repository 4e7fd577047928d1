"""What liveness at checkout costs: PRE_PING True against False, and our check against a ping.

Rows of ``bench.bench_suite`` (issue 18, points 3, 5 and 7), on the suite's
pool "main" (``PRE_PING: True``, MONITORING on, as the package ships):

1. a ``session_scope()`` ``SELECT 1`` with ``PRE_PING=True`` against the same
   with ``PRE_PING=False``: at most 1.03. Both sides are the same engine and
   pool; only the pool's checks change between the A and B runs of a round.
   This row and the next run three times the suite's rounds: the difference
   is a microsecond or two on 500, far inside one round's noise;
2. a request through the middleware doing one ``SELECT 1``, likewise: at most 1.03;
3. a checkout and return through our engine (``raw_connection()``, metrics on)
   against a plain SQLAlchemy ``QueuePool`` engine doing the same liveness work:
   a checkout listener that runs the same driver check on every checkout: at
   most 1.05;
4. the same checkout against a plain engine with ``pool_pre_ping=True`` (a round
   trip per checkout, what ``PRE_PING`` cost before): reported;
5. our checkout with metrics against our pool with its metrics hooks off (the
   pool's own cost): reported, to show where the time of row 3 goes; and that
   pool without metrics against row 3's anchor, the pool alone: at most 1.05.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from bench.bench_metrics import raw_engine
from bench.rows import Operation, Row, judged, paired

#: The PRE_PING rows run this many times the suite's rounds.
PRECISE_ROUNDS_FACTOR = 3


@contextmanager
def _checks(engine: Any, pre_ping: bool | str) -> Iterator[None]:
    """Run with the pool's ``PRE_PING`` set to ``pre_ping``, then put the pool's own back."""
    from dataclasses import replace

    pool = engine.pool
    kept = pool.checkout_checks
    pool.checkout_checks = replace(kept, pre_ping=pre_ping)
    try:
        yield
    finally:
        pool.checkout_checks = kept


def _with_checks(operation: Operation, engine: Any, pre_ping: bool | str) -> Operation:
    def run(n: int) -> None:
        with _checks(engine, pre_ping):
            operation(n)

    return run


def raw_checkout_loop(engine: Any) -> Operation:
    """``raw_connection()`` and ``close()``: a checkout and return, nothing else."""

    def run(n: int) -> None:
        for _ in range(n):
            engine.raw_connection().close()

    return run


def plain_engine(*, pre_ping: bool, alive: Any = None) -> Any:
    """A plain QueuePool engine on main's URL and sizes; ``alive`` runs on each checkout."""
    from sqlalchemy import event
    from sqlalchemy.exc import DisconnectionError

    engine = raw_engine(pre_ping=pre_ping)  # main's sizes: 5, overflow 10
    if alive is not None:

        @event.listens_for(engine, "checkout")
        def check(dbapi_connection: Any, record: Any, proxy: Any) -> None:
            if not alive(dbapi_connection):
                raise DisconnectionError("failed its liveness check")

    return engine


@contextmanager
def _metrics_detached(engine: Any) -> Iterator[None]:
    """Our pool without its metrics hooks: what each checkout pays for them.

    The queue pool times a checkout and reports it to the recorder only while
    the recorder's acquire histogram is set (MONITORING on).
    """
    from mingus_sessions.engines import get_entry

    probe = get_entry().probe
    kept = probe.acquire
    probe.acquire = None
    try:
        yield
    finally:
        probe.acquire = kept


def rows(rounds: int, verbose: bool, scoped_request: Operation) -> list[Row]:
    from bench.bench_suite import scope_loop
    from mingus_sessions import get_engine
    from mingus_sessions._core.liveness import liveness_check

    engine = get_engine()
    found: list[Row] = []

    # What PRE_PING adds is a microsecond or two on 500: three times the rounds, as
    # the other rows judged near a round's noise get.
    precise = rounds * PRECISE_ROUNDS_FACTOR
    scope = scope_loop()
    row = paired(
        _with_checks(scope, engine, True), _with_checks(scope, engine, False), 200, precise, verbose
    )
    row.notes.append(f"{precise} rounds")
    found.append(
        judged(
            row, "session_scope() SELECT 1: PRE_PING True vs False", "<= 1.03", row.ratio <= 1.03
        )
    )

    row = paired(
        _with_checks(scoped_request, engine, True),
        _with_checks(scoped_request, engine, False),
        100,
        precise,
        verbose,
    )
    row.notes.append(f"{precise} rounds")
    found.append(
        judged(
            row,
            "request (middleware, SELECT 1): PRE_PING True vs False",
            "<= 1.03",
            row.ratio <= 1.03,
        )
    )

    ours = raw_checkout_loop(engine)
    alive = liveness_check(f"{engine.dialect.name}+{engine.dialect.driver}", primary=True)
    same_work = plain_engine(pre_ping=False, alive=alive)
    pinging = plain_engine(pre_ping=True)
    try:
        row = paired(ours, raw_checkout_loop(same_work), 400, rounds, verbose)
        row.notes.append("B: QueuePool + a checkout listener running the same driver check")
        found.append(
            judged(
                row,
                "checkout + return, metrics on: ours vs QueuePool + same check",
                "<= 1.05",
                row.ratio <= 1.05,
            )
        )
        row = paired(ours, raw_checkout_loop(pinging), 200, rounds, verbose)
        found.append(
            judged(
                row, "checkout + return: ours vs QueuePool, pool_pre_ping=True", "reported", None
            )
        )
    finally:
        same_work.dispose()
        pinging.dispose()

    def detached(n: int) -> None:
        with _metrics_detached(engine):
            ours(n)

    row = paired(ours, detached, 400, rounds, verbose)
    row.notes.append("B: the same pool with its metrics hooks off")
    found.append(judged(row, "checkout + return: metrics on vs off, our pool", "reported", None))
    same_work = plain_engine(pre_ping=False, alive=alive)
    try:
        row = paired(detached, raw_checkout_loop(same_work), 400, rounds, verbose)
    finally:
        same_work.dispose()
    row.notes.append("the pool alone: fair hand-off and its check, no metrics")
    found.append(
        judged(
            row,
            "checkout + return, metrics off: ours vs QueuePool + same check",
            "<= 1.05",
            row.ratio <= 1.05,
        )
    )
    return found
