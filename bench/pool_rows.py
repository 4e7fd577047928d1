"""Pools under contention (issue 18): our ``queue`` pool against two anchors, in one run.

Printed by ``python -m bench.bench_suite`` after its table, or alone with
``python -m bench.bench_suite --only pools [--pool-rounds N]``.

Every operation is the same on every pool: check a connection out, run
``SELECT 1`` through the driver (psycopg 3) and fetch it, hold the connection
(``time.sleep``), commit, give it back. Only the check-out is timed as the
acquire wait (a check-out that times out counts with the time it waited). The
pools under test:

- **ours**: the engine that ``mingus_sessions.get_engine(pool)`` builds from
  ``bench/suite_settings.py`` (``POOL_CLASS`` ``"queue"``, the default, with
  ``MONITORING`` on), checked out with ``engine.raw_connection()``;
- **QueuePool**: ``create_engine(same URL, poolclass=QueuePool, ...)`` with the
  same size, overflow and timeout, checked out with ``raw_connection()`` too,
  so both SQLAlchemy sides do the same work per operation;
- **psycopg_pool**: ``psycopg_pool.ConnectionPool(min_size=max_size=size)`` on
  the same connection parameters, checked out with ``pool.connection()``.

Pre-ping is off on all of them (``PRE_PING: False``, ``pool_pre_ping=False``,
no ``check``): these rows judge how a pool hands its connections out, not how
it tests them.

1. **8 threads on a pool of 4** (overflow 0, timeout 30 s, hold 2 ms), all
   three pools, 6 s each, split into ``--pool-rounds`` rounds whose order
   rotates (ours, QueuePool, psycopg_pool; then QueuePool, psycopg_pool, ours;
   ...). Per pool, over all its rounds: throughput, acquire wait p50, p99,
   p99.9 and max, Jain's fairness index of the operations each thread
   completed, timeouts. Targets: ours' max wait at most 2x psycopg_pool's, Jain
   at least 0.99, throughput at least 0.95x QueuePool's and psycopg_pool's,
   no timeout.
2. **30 threads on a pool of 3** (overflow 0, timeout 5 s, hold 50 ms), the
   shape of SQLAlchemy issue 7679 scaled down: ours against QueuePool, 15 s
   each in rounds of at least 7.5 s (a round much shorter than the timeout
   would end before a starved caller times out), A B then B A. Targets for
   ours: no timeout, max wait at most 1.5x the ideal, threads / size x hold
   (500 ms).
3. **One thread, uncontended**: ``raw_connection()`` and ``close()`` on ours
   against QueuePool with the same settings, in alternating rounds (10 per
   pool round): reported, for the record.
"""

from __future__ import annotations

import argparse
import gc
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any

from bench.rows import Operation, jain_index, judged, paired, percentile, report, verdict

#: Pools of bench/suite_settings.py, built by our package.
CONTENDED_POOL = "contended"
STARVED_POOL = "starved"

#: Each pool's share of row 2's duration is cut into rounds no shorter than this.
MIN_STARVED_ROUND = 7.5

Checkout = Callable[[], AbstractContextManager[Any]]


@dataclass(frozen=True)
class Shape:
    """One contention scenario."""

    threads: int
    size: int
    hold: float  # seconds a connection is held
    timeout: float  # the pools' check-out timeout, seconds
    seconds: float  # per pool, all rounds together

    @property
    def ideal_wait_ms(self) -> float:
        """The wait a caller should expect when the pool serves its queue in order."""
        return self.threads / self.size * self.hold * 1e3


CONTENTION = Shape(threads=8, size=4, hold=0.002, timeout=30.0, seconds=6.0)
STARVATION = Shape(threads=30, size=3, hold=0.050, timeout=5.0, seconds=15.0)


@dataclass
class Side:
    """One pool under test."""

    name: str
    checkout: Checkout
    close: Callable[[], None]


@dataclass
class Round:
    """What one pool did in one round."""

    ops: list[int]  # per thread
    waits: list[float]  # seconds, every check-out (timed-out ones included)
    timeouts: int
    elapsed: float


@dataclass
class Tally:
    """One pool's rounds, added up."""

    name: str
    rounds: list[Round] = field(default_factory=list)

    @property
    def ops(self) -> list[int]:
        """Operations per thread over all rounds (thread i of every round is one caller)."""
        return [sum(column) for column in zip(*(r.ops for r in self.rounds), strict=True)]

    @property
    def throughput(self) -> float:
        return sum(sum(r.ops) for r in self.rounds) / sum(r.elapsed for r in self.rounds)

    @property
    def round_throughputs(self) -> list[float]:
        return [sum(r.ops) / r.elapsed for r in self.rounds]

    @property
    def timeouts(self) -> int:
        return sum(r.timeouts for r in self.rounds)

    @property
    def jain(self) -> float:
        return jain_index(self.ops)

    @property
    def worst_round_jain(self) -> float:
        return min(jain_index(r.ops) for r in self.rounds)

    def wait_ms(self, p: float) -> float:
        ordered = sorted(w for r in self.rounds for w in r.waits)
        return percentile(ordered, p) * 1e3


@dataclass
class Target:
    """One judged figure of a pool row."""

    name: str
    value: str
    target: str
    met: bool | None


# -- the work ---------------------------------------------------------------------------------


def timeout_errors() -> tuple[type[BaseException], ...]:
    """What a check-out raises when the pool's timeout passes, on any side."""
    from psycopg_pool import PoolTimeout
    from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeout

    from mingus_sessions import PoolExhaustedError

    return (SQLAlchemyTimeout, PoolTimeout, PoolExhaustedError)


def use(connection: Any, hold: float) -> None:
    """The operation on a checked-out connection: ``SELECT 1``, hold, commit."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchall()
    time.sleep(hold)
    connection.commit()


def drive(
    checkout: Checkout,
    threads: int,
    seconds: float,
    work: Callable[[Any], None],
    timeouts: tuple[type[BaseException], ...],
) -> Round:
    """``threads`` threads doing check-out, ``work``, return, for ``seconds``; what each did.

    A thread starts no operation after ``seconds`` but finishes the one it is in
    (its wait included), and the round lasts until the last thread is done.
    """
    ops = [0] * threads
    waits: list[list[float]] = [[] for _ in range(threads)]
    timed_out = [0] * threads
    failures: list[BaseException] = []
    stop = threading.Event()
    start = threading.Barrier(threads + 1)

    def caller(index: int) -> None:
        mine = waits[index]
        clock = time.perf_counter
        start.wait()
        while not stop.is_set():
            started = clock()
            waited = None
            try:
                with checkout() as connection:
                    waited = clock() - started
                    work(connection)
            except timeouts:
                if waited is not None:
                    raise
                mine.append(clock() - started)
                timed_out[index] += 1
                continue
            except BaseException as exc:  # noqa: BLE001 - reported after the join
                failures.append(exc)
                return
            mine.append(waited)
            ops[index] += 1

    workers = [threading.Thread(target=caller, args=(i,), daemon=True) for i in range(threads)]
    for worker in workers:
        worker.start()
    gc.collect()
    start.wait()
    began = time.perf_counter()
    stop.wait(seconds)
    stop.set()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - began
    if failures:
        raise failures[0]
    return Round(
        ops=ops,
        waits=[w for mine in waits for w in mine],
        timeouts=sum(timed_out),
        elapsed=elapsed,
    )


def contend(
    sides: list[Side],
    shape: Shape,
    rounds: int,
    verbose: bool,
    warmup: float = 0.3,
    after_warmup: Callable[[], None] = lambda: None,
) -> list[Tally]:
    """Run ``shape`` on every side, ``rounds`` rounds each, the order rotating per round."""
    timeouts = timeout_errors()

    def work(connection: Any) -> None:
        use(connection, shape.hold)

    for side in sides:
        # Untimed: every pool opens its connections before it is measured.
        drive(side.checkout, shape.threads, warmup, work, timeouts)
    after_warmup()
    tallies = {side.name: Tally(side.name) for side in sides}
    each = shape.seconds / rounds
    for index in range(rounds):
        shift = index % len(sides)
        for side in sides[shift:] + sides[:shift]:
            done = drive(side.checkout, shape.threads, each, work, timeouts)
            tallies[side.name].rounds.append(done)
            if verbose:
                print(
                    f"    round {index:2} {side.name:13} {sum(done.ops) / done.elapsed:8.1f} ops/s"
                    f"  max wait {max(done.waits) * 1e3:8.1f} ms  timeouts {done.timeouts}",
                    flush=True,
                )
    return [tallies[side.name] for side in sides]


# -- the pools --------------------------------------------------------------------------------


def sqlalchemy_checkout(engine: Any) -> Checkout:
    @contextmanager
    def checkout() -> Iterator[Any]:
        connection = engine.raw_connection()
        try:
            yield connection
        finally:
            connection.close()

    return checkout


def our_engine(pool: str, shape: Shape) -> Any:
    """Our engine for ``pool``, after checking that its settings are the shape's."""
    from mingus_sessions import get_engine
    from mingus_sessions.metrics import get_pool_metrics

    engine = get_engine(pool)
    seen = get_pool_metrics(pool)
    # Pre-ping is in no public snapshot: the queue pool keeps it in its checkout
    # checks (SQLAlchemy's own _pre_ping stays off there).
    checks = getattr(engine.pool, "checkout_checks", None)
    pre_ping = bool(checks.pre_ping) if checks is not None else engine.pool._pre_ping
    built = (seen.pool_size, seen.max_overflow, seen.timeout, pre_ping or engine.pool._pre_ping)
    wanted = (shape.size, 0, shape.timeout, False)
    if built != wanted:
        raise RuntimeError(
            f'MINGUS_SESSIONS["POOLS"]["{pool}"] in bench/suite_settings.py built a pool of '
            f"(size, max overflow, timeout, pre-ping) {built}, not {wanted}"
        )
    return engine


def ours(pool: str, shape: Shape) -> Side:
    return Side("ours", sqlalchemy_checkout(our_engine(pool, shape)), lambda: None)


def plain_queue_engine(pool: str, shape: Shape) -> Any:
    """A plain SQLAlchemy engine on the URL of our ``pool``, sized by ``shape``."""
    from sqlalchemy import create_engine
    from sqlalchemy.pool import QueuePool

    return create_engine(
        our_engine(pool, shape).url,
        poolclass=QueuePool,
        pool_size=shape.size,
        max_overflow=0,
        pool_timeout=shape.timeout,
        pool_pre_ping=False,
    )


def queue_pool(pool: str, shape: Shape) -> Side:
    """Plain SQLAlchemy on the URL of our ``pool``, sized by ``shape``."""
    engine = plain_queue_engine(pool, shape)
    return Side("QueuePool", sqlalchemy_checkout(engine), engine.dispose)


def pool_before(pool: str, shape: Shape) -> Side:
    """The queue pool as it was before the fair hand-off: SQLAlchemy's ``QueuePool`` with
    the metrics' checkout and checkin listeners (a recorder of its own, the same settings)."""
    from mingus_sessions._core.recorder import PoolRecorder
    from mingus_sessions.engines import get_entry

    ours_now = get_entry(pool).probe
    engine = plain_queue_engine(pool, shape)
    recorder = PoolRecorder(
        f"{pool}-before",
        leak_threshold=getattr(ours_now, "leak_threshold", 30.0),
        slow_threshold=None,
    )
    recorder.install(engine)
    return Side("pool before", sqlalchemy_checkout(engine), engine.dispose)


def psycopg_pool(pool: str, shape: Shape) -> Side:
    """psycopg's own pool, sized by ``shape``, on the connection parameters of our ``pool``."""
    from psycopg_pool import ConnectionPool

    engine = our_engine(pool, shape)
    _, params = engine.dialect.create_connect_args(engine.url)
    connections = ConnectionPool(
        kwargs=params,
        min_size=shape.size,
        max_size=shape.size,
        timeout=shape.timeout,
        open=False,
    )
    connections.open(wait=True)
    return Side("psycopg_pool", connections.connection, connections.close)


def sides_of(makers: list[Callable[[str, Shape], Side]], pool: str, shape: Shape) -> list[Side]:
    return [make(pool, shape) for make in makers]


def close_all(sides: list[Side]) -> None:
    for side in sides:
        side.close()


# -- the rows ---------------------------------------------------------------------------------


def describe(shape: Shape, rounds: int, names: list[str]) -> str:
    return (
        f"{shape.threads} threads on a pool of {shape.size} (max overflow 0, timeout "
        f"{shape.timeout:g} s), each: check out, SELECT 1, hold {shape.hold * 1e3:g} ms, commit, "
        f"return; {', '.join(names)}: {shape.seconds:g} s each in {rounds} rounds of "
        f"{shape.seconds / rounds:g} s, the order rotating"
    )


def pool_table(tallies: list[Tally], out: Any) -> None:
    print(
        f"  {'pool':14} {'ops/s':>8} {'wait p50':>9} {'p99':>8} {'p99.9':>8} {'max ms':>8} "
        f"{'Jain':>7} {'worst rd':>8} {'timeouts':>8}  ops per thread",
        file=out,
    )
    for tally in tallies:
        ops = tally.ops
        print(
            f"  {tally.name:14} {tally.throughput:8.1f} {tally.wait_ms(50):9.2f} "
            f"{tally.wait_ms(99):8.2f} {tally.wait_ms(99.9):8.2f} {tally.wait_ms(100):8.1f} "
            f"{tally.jain:7.4f} {tally.worst_round_jain:8.4f} {tally.timeouts:8}  "
            f"{min(ops)}..{max(ops)}",
            file=out,
        )


def targets_table(targets: list[Target], out: Any) -> None:
    for target in targets:
        print(
            f"  {target.name:44} {target.value:34} {target.target:14} {verdict(target.met)}",
            file=out,
        )


def our_metrics(pool: str, out: Any) -> None:
    """What our pool's own metrics saw over the timed rounds, next to the bench's figures."""
    from mingus_sessions.metrics import get_pool_metrics

    seen = get_pool_metrics(pool)
    wait = seen.acquire_wait_ms
    print(
        f"  ours, as its metrics saw it: {seen.checkouts} checkouts, {seen.timeouts} timeouts, "
        f"{seen.queued} queued, acquire wait p50 {wait.p50:.2f} p99 {wait.p99:.2f} "
        f"max {wait.max:.1f} ms",
        file=out,
    )


def reset_ours(pool: str) -> Callable[[], None]:
    def reset() -> None:
        from mingus_sessions.metrics import reset_metrics

        reset_metrics(pool)

    return reset


def throughput_target(mine: Tally, anchor: Tally) -> Target:
    ratio = mine.throughput / anchor.throughput
    per_round = [
        a / b for a, b in zip(mine.round_throughputs, anchor.round_throughputs, strict=True)
    ]
    low, high = min(per_round), max(per_round)
    return Target(
        f"throughput, ours vs {anchor.name}",
        f"{ratio:.3f}x (rounds {low:.3f}..{high:.3f})",
        ">= 0.95x",
        ratio >= 0.95,
    )


def contention_row(rounds: int, verbose: bool, out: Any) -> list[Target]:
    sides = sides_of([ours, queue_pool, psycopg_pool], CONTENDED_POOL, CONTENTION)
    try:
        print(describe(CONTENTION, rounds, [s.name for s in sides]), file=out, flush=True)
        mine, queue, psycopg = contend(
            sides, CONTENTION, rounds, verbose, after_warmup=reset_ours(CONTENDED_POOL)
        )
    finally:
        close_all(sides)
    pool_table([mine, queue, psycopg], out)
    our_metrics(CONTENDED_POOL, out)
    ours_max, their_max = mine.wait_ms(100), psycopg.wait_ms(100)
    targets = [
        Target(
            "max wait, ours vs psycopg_pool",
            f"{ours_max:.1f} / {their_max:.1f} ms = {ours_max / their_max:.2f}x",
            "<= 2x",
            ours_max <= 2 * their_max,
        ),
        Target("Jain index of ours", f"{mine.jain:.4f}", ">= 0.99", mine.jain >= 0.99),
        throughput_target(mine, queue),
        throughput_target(mine, psycopg),
        Target("timeouts of ours", str(mine.timeouts), "0", mine.timeouts == 0),
    ]
    targets_table(targets, out)
    return targets


def starvation_rounds(pool_rounds: int) -> int:
    """Row 2's rounds: as many as asked, but none shorter than :data:`MIN_STARVED_ROUND`."""
    return max(1, min(pool_rounds, int(STARVATION.seconds // MIN_STARVED_ROUND)))


def starvation_row(pool_rounds: int, verbose: bool, out: Any) -> list[Target]:
    rounds = starvation_rounds(pool_rounds)
    sides = sides_of([ours, queue_pool], STARVED_POOL, STARVATION)
    try:
        print(describe(STARVATION, rounds, [s.name for s in sides]), file=out, flush=True)
        mine, queue = contend(
            sides, STARVATION, rounds, verbose, after_warmup=reset_ours(STARVED_POOL)
        )
    finally:
        close_all(sides)
    pool_table([mine, queue], out)
    our_metrics(STARVED_POOL, out)
    ideal = STARVATION.ideal_wait_ms
    worst = mine.wait_ms(100)
    targets = [
        Target(
            "timeouts, ours (QueuePool)",
            f"{mine.timeouts} ({queue.timeouts})",
            "0",
            mine.timeouts == 0,
        ),
        Target(
            "max wait of ours vs the ideal",
            f"{worst:.0f} / {ideal:.0f} ms = {worst / ideal:.2f}x",
            "<= 1.5x",
            worst <= 1.5 * ideal,
        ),
        Target(
            "max wait of QueuePool vs the ideal",
            f"{queue.wait_ms(100):.0f} ms = {queue.wait_ms(100) / ideal:.2f}x",
            "reported",
            None,
        ),
        Target(
            "Jain index, ours (QueuePool)", f"{mine.jain:.4f} ({queue.jain:.4f})", "reported", None
        ),
    ]
    targets_table(targets, out)
    return targets


def checkout_return_loop(side: Side) -> Operation:
    checkout = side.checkout

    def run(n: int) -> None:
        for _ in range(n):
            with checkout():
                pass

    return run


def uncontended_row(rounds: int, verbose: bool, out: Any) -> None:
    mine, queue, before = sides_of([ours, queue_pool, pool_before], CONTENDED_POOL, CONTENTION)
    try:
        row = paired(
            checkout_return_loop(mine), checkout_return_loop(queue), 1_000, rounds, verbose
        )
        against_before = paired(
            checkout_return_loop(mine), checkout_return_loop(before), 1_000, rounds, verbose
        )
    finally:
        close_all([mine, queue, before])
    row.notes.append(f"{rounds} rounds; raw_connection() and close(), pre-ping off on both")
    row.notes.append("ours with MONITORING on, as the package ships")
    against_before.notes.append(
        "B: QueuePool with the metrics' checkout/checkin listeners, as the pool was before"
    )
    report(
        [
            judged(row, "one thread: checkout + return, ours vs plain QueuePool", "reported", None),
            judged(
                against_before,
                "one thread: checkout + return, ours vs the pool before",
                "<= 1.05",
                against_before.ratio <= 1.05,
            ),
        ],
        out,
    )


def run(args: argparse.Namespace, out: Any) -> list[Target]:
    """Print the three pool rows; their judged targets."""
    rounds = args.pool_rounds
    print("Pools under contention (issue 18): per pool, totals over its rounds", file=out)
    print(file=out)
    targets = contention_row(rounds, args.verbose, out)
    print(file=out)
    targets += starvation_row(rounds, args.verbose, out)
    print(file=out)
    uncontended_row(10 * rounds, args.verbose, out)
    from psycopg_pool import __version__ as psycopg_pool_version

    print(f"(psycopg_pool {psycopg_pool_version})", file=out)
    return targets
