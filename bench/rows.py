"""The rows a benchmark prints: same-run comparisons of ours (A) against an anchor (B).

Shared by ``bench.bench_suite`` and ``bench.pool_rows``: a :class:`Row` and the
table it is printed in, :func:`paired` (A and B timed in alternating rounds),
and the statistics the pool rows need (:func:`percentile`, :func:`jain_index`).
A missed target is printed as MISSED; nothing here turns it into a failure.
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench import bench_metrics

Operation = Callable[[int], None]


@dataclass
class Row:
    """One comparison: A is ours, B the anchor."""

    name: str
    a_us: float
    b_us: float
    ratio: float
    iqr: tuple[float, float]
    target: str
    met: bool | None  # None: reported, no target
    notes: list[str] = field(default_factory=list)
    #: The per-round µs of each side, in the order timed (empty for a single figure).
    a_rounds: list[float] = field(default_factory=list)
    b_rounds: list[float] = field(default_factory=list)

    @property
    def difference_us(self) -> float:
        """The median over rounds of A - B in µs per operation: what A adds, paired by round."""
        return statistics.median(a - b for a, b in zip(self.a_rounds, self.b_rounds, strict=True))


def quartiles(values: Sequence[float]) -> tuple[float, float]:
    """The first and third quartiles (both the value itself when there is one)."""
    if len(values) == 1:
        return values[0], values[0]
    return bench_metrics.quartiles(list(values))


def percentile(ordered: Sequence[float], p: float) -> float:
    """The nearest-rank ``p``-th percentile (0 < p <= 100) of an already sorted sequence.

    Nearest rank, not interpolation: the figure is a wait some caller really had,
    and p100 is the maximum.
    """
    if not ordered:
        raise ValueError("no values")
    if not 0 < p <= 100:
        raise ValueError(f"percentile {p} is not in (0, 100]")
    # Rounded first: 99.9 / 100 * 1000 is 999.0000000000001 in binary floating point.
    rank = math.ceil(round(p / 100 * len(ordered), 9))
    return ordered[max(rank, 1) - 1]


def jain_index(counts: Sequence[float]) -> float:
    """Jain's fairness index of ``counts``: 1.0 when all are equal, 1/n when one got everything.

    NaN when there is nothing to share (no counts, or all zero).
    """
    total = sum(counts)
    squares = sum(c * c for c in counts)
    if not counts or squares == 0:
        return math.nan
    return total * total / (len(counts) * squares)


def paired(a: Operation, b: Operation, n: int, rounds: int, verbose: bool) -> Row:
    """Time ``a`` and ``b`` (``n`` operations each) in alternating order; return the figures."""
    a(max(n // 4, 1))
    b(max(n // 4, 1))
    a_us: list[float] = []
    b_us: list[float] = []
    for index in range(rounds):
        order = ((a, a_us), (b, b_us)) if index % 2 == 0 else ((b, b_us), (a, a_us))
        for operation, samples in order:
            gc.collect()
            started = time.perf_counter()
            operation(n)
            samples.append((time.perf_counter() - started) / n * 1e6)
        if verbose:
            print(f"    round {index:3}: A {a_us[-1]:9.1f} µs  B {b_us[-1]:9.1f} µs", flush=True)
    return row_of(a_us, b_us)


def row_of(a_us: list[float], b_us: list[float]) -> Row:
    """An unnamed row of per-round µs of A and B: medians, the median ratio and its IQR."""
    ratios = [x / y for x, y in zip(a_us, b_us, strict=True)]
    return Row(
        name="",
        a_us=statistics.median(a_us),
        b_us=statistics.median(b_us),
        ratio=statistics.median(ratios),
        iqr=quartiles(ratios),
        target="",
        met=None,
        a_rounds=a_us,
        b_rounds=b_us,
    )


def single_figure(name: str, value: float, target: str, met: bool) -> Row:
    """A row with one figure (in the A column) and no anchor to compare with."""
    nan = float("nan")
    return Row(name=name, a_us=value, b_us=nan, ratio=nan, iqr=(nan, nan), target=target, met=met)


def judged(row: Row, name: str, target: str, met: bool | None) -> Row:
    row.name, row.target, row.met = name, target, met
    return row


def verdict(met: bool | None) -> str:
    return "reported" if met is None else ("met" if met else "MISSED")


def figure(value: float, digits: int = 1) -> str:
    return "-" if value != value else f"{value:.{digits}f}"


def report(rows: list[Row], out: Any) -> None:
    print(
        f"{'comparison (A = ours, B = anchor)':68} {'A µs':>9} {'B µs':>9} {'A/B':>7} "
        f"{'IQR':>13}  {'target':<44} verdict",
        file=out,
    )
    for row in rows:
        iqr = "-" if row.iqr[0] != row.iqr[0] else f"{row.iqr[0]:.3f}..{row.iqr[1]:.3f}"
        print(
            f"{row.name:68} {figure(row.a_us):>9} {figure(row.b_us):>9} "
            f"{figure(row.ratio, 3):>7} {iqr:>13}  {row.target:<44} {verdict(row.met)}",
            file=out,
        )
        for note in row.notes:
            print(f"{'':70}{note}", file=out)
