"""The pool rows' own arithmetic and driver (``bench/pool_rows.py``), without a database.

The rows judge a pool by these helpers, so a wrong percentile or fairness
index would pass or fail a pool for the wrong reason.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from bench import bench_suite, pool_rows
from bench.rows import jain_index, percentile, quartiles


class FakeTimeout(Exception):
    pass


def semaphore_pool(size: int, timeout: float):
    """A pool of ``size`` fake connections that times out like a real one."""
    slots = threading.Semaphore(size)

    @contextmanager
    def checkout() -> Iterator[object]:
        if not slots.acquire(timeout=timeout):
            raise FakeTimeout
        try:
            yield object()
        finally:
            slots.release()

    return checkout


def test_percentile_is_nearest_rank() -> None:
    """A percentile is a value that occurred: the ceil(p% of n)-th smallest, p100 the maximum."""
    values = [float(v) for v in range(1, 1001)]
    assert percentile(values, 50) == 500.0
    assert percentile(values, 99) == 990.0
    assert percentile(values, 99.9) == 999.0
    assert percentile(values, 100) == 1000.0
    assert percentile([7.0], 0.1) == 7.0


@pytest.mark.parametrize("p", [0, -1, 100.5])
def test_percentile_refuses_a_p_out_of_range(p: float) -> None:
    """Only 0 < p <= 100 is a percentile."""
    with pytest.raises(ValueError, match="not in"):
        percentile([1.0, 2.0], p)


def test_percentile_of_nothing_is_an_error() -> None:
    """No values, no percentile."""
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)


def test_jain_index() -> None:
    """Equal shares give 1, one caller taking everything gives 1/n, nothing shared gives NaN."""
    assert jain_index([5, 5, 5, 5]) == 1.0
    assert jain_index([8, 0, 0, 0]) == 0.25
    assert jain_index([3, 1]) == pytest.approx(16 / 20)
    assert math.isnan(jain_index([0, 0]))
    assert math.isnan(jain_index([]))


def test_quartiles_of_one_value() -> None:
    """A single round's ratio is its own interquartile range."""
    assert quartiles([1.5]) == (1.5, 1.5)
    assert quartiles([1.0, 2.0, 3.0, 4.0, 5.0]) == (2.0, 4.0)


def test_only_pools_parses() -> None:
    """``--only pools --pool-rounds N`` selects the pool rows and their rounds."""
    args = bench_suite.parse_args(["--only", "pools", "--pool-rounds", "2"])
    assert (args.only, args.pool_rounds) == ("pools", 2)
    default = bench_suite.parse_args([])
    assert (default.only, default.pool_rounds) == ("all", 3)


@pytest.mark.parametrize("bad", ["0", "-2"])
def test_pool_rounds_must_be_positive(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Zero rounds would divide the durations by zero: refused when parsing."""
    with pytest.raises(SystemExit):
        bench_suite.parse_args(["--pool-rounds", bad])
    assert "positive" in capsys.readouterr().err


def test_starved_rounds_are_never_shorter_than_the_minimum() -> None:
    """Row 2 splits its 15 s into at most two rounds, so a starved caller can time out."""
    assert pool_rows.starvation_rounds(1) == 1
    assert pool_rows.starvation_rounds(2) == 2
    assert pool_rows.starvation_rounds(3) == 2
    assert pool_rows.starvation_rounds(50) == 2


def test_drive_counts_every_operation_and_wait() -> None:
    """Each completed operation is counted for its thread and has one wait."""
    done = pool_rows.drive(
        semaphore_pool(2, 1.0), 4, 0.2, lambda _c: time.sleep(0.002), (FakeTimeout,)
    )
    assert len(done.ops) == 4
    assert sum(done.ops) > 20
    assert done.timeouts == 0
    assert len(done.waits) == sum(done.ops)
    assert done.elapsed >= 0.2


def test_drive_counts_timeouts_with_their_waits() -> None:
    """A check-out that times out is a timeout, not an operation, and its wait is kept."""
    done = pool_rows.drive(semaphore_pool(0, 0.05), 2, 0.12, lambda _c: None, (FakeTimeout,))
    assert sum(done.ops) == 0
    assert done.timeouts >= 2
    assert len(done.waits) == done.timeouts
    assert min(done.waits) >= 0.05


def test_drive_raises_what_the_work_raised() -> None:
    """A failure other than a check-out timeout ends the round with that error."""

    def fail(_connection: object) -> None:
        raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        pool_rows.drive(semaphore_pool(1, 1.0), 2, 0.05, fail, (FakeTimeout,))


def test_tally_adds_up_threads_across_rounds() -> None:
    """Thread i of every round is one caller; throughput is all operations over all time."""
    tally = pool_rows.Tally("x")
    tally.rounds.append(pool_rows.Round(ops=[1, 3], waits=[0.001] * 4, timeouts=0, elapsed=1.0))
    tally.rounds.append(pool_rows.Round(ops=[3, 1], waits=[0.003] * 4, timeouts=1, elapsed=3.0))
    assert tally.ops == [4, 4]
    assert tally.jain == 1.0
    assert tally.worst_round_jain == pytest.approx(16 / 20)
    assert tally.throughput == 2.0
    assert tally.timeouts == 1
    assert tally.wait_ms(100) == pytest.approx(3.0)
    assert tally.wait_ms(50) == pytest.approx(1.0)
