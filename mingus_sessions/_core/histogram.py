"""A fixed-size histogram of durations: constant memory, within 6.25% precision.

Plain Python. Values are recorded in whole microseconds into log-linear
buckets, as HdrHistogram does: one per microsecond below 32 µs, then 16 per
power of two. Memory never grows with traffic, and a percentile is reported as
its bucket's upper bound, at most one bucket (3 to 6.25%) above the true value.
Recording is a table lookup and four updates with no lock: under the GIL an
increment can at worst be lost in a race, never corrupt the histogram.

Each value is also counted in one of a few fixed buckets whose bounds are
OpenTelemetry's advisory boundaries (:data:`FIXED_BOUNDS_US`), so that an
exporter can publish a histogram that adds up across processes exactly: the
log-linear buckets do not have those bounds among their edges.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass

__all__ = ["FIXED_BOUNDS_US", "Histogram", "Percentiles", "quantile_of"]

#: OpenTelemetry's advisory bucket boundaries for database client durations
#: (``db.client.operation.duration``: 1, 5, 10, 50, 100, 500 ms, 1, 5, 10 s), in µs.
#: The fixed bucket ``i`` counts the values ``v`` with ``FIXED_BOUNDS_US[i - 1] <= v <
#: FIXED_BOUNDS_US[i]``; the last one, everything from 10 s. A value is a duration
#: truncated to whole µs, so ``v < bound`` holds exactly when the duration was below it.
FIXED_BOUNDS_US = (
    1_000,
    5_000,
    10_000,
    50_000,
    100_000,
    500_000,
    1_000_000,
    5_000_000,
    10_000_000,
)

_SUB_BITS = 5
_SUB = 1 << _SUB_BITS  # 32 sub-buckets per power of two
_HALF = _SUB >> 1
#: Up to 2**40 µs (about 12.7 days); longer values land in the last bucket.
_MAX_EXPONENT = 40
_BUCKETS = _SUB + (_MAX_EXPONENT - _SUB_BITS + 1) * _HALF


def _index(value: int) -> int:
    if value < _SUB:
        return value if value > 0 else 0
    shift = value.bit_length() - _SUB_BITS
    index = _SUB + (shift - 1) * _HALF + ((value >> shift) - _HALF)
    return index if index < _BUCKETS else _BUCKETS - 1


#: Values below this (16.4 ms) have their bucket looked up in a table: recording
#: a typical duration then costs one subscript instead of a bit_length() call
#: and four operations. The table holds 16,384 references to ints that exist
#: anyway (the bucket numbers), once per process.
_TABLED = 1 << 14


def _bucket_table() -> tuple[int, ...]:
    # Below _SUB every value is its own bucket; above, each power of two is cut
    # into _HALF runs of equal length, so the table is built a run at a time.
    table = list(range(_SUB))
    while len(table) < _TABLED:
        value = len(table)
        table.extend([_index(value)] * (1 << (value.bit_length() - _SUB_BITS)))
    return tuple(table)


_BUCKET_OF = _bucket_table()
#: The fixed bucket of each tabled value (its number of bounds at or below it).
_FIXED_OF = tuple(bisect_right(FIXED_BOUNDS_US, value) for value in range(_TABLED))


def _upper_bound(index: int) -> int:
    """The largest value (µs) that lands in bucket ``index``."""
    if index < _SUB:
        return index
    shift = (index - _SUB) // _HALF + 1
    mantissa = (index - _SUB) % _HALF + _HALF
    return ((mantissa + 1) << shift) - 1


def quantile_of(buckets: list[int], quantile: float) -> int:
    """The value (µs) at ``quantile`` of bucket counts: the upper bound of its bucket."""
    total = sum(buckets)
    if total <= 0:
        return 0
    rank = max(1, int(quantile * total + 0.999999))
    seen = 0
    for index, found in enumerate(buckets):
        seen += found
        if seen >= rank:
            return _upper_bound(index)
    return _upper_bound(len(buckets) - 1)


@dataclass(frozen=True, slots=True)
class Percentiles:
    """Percentiles of a distribution, in milliseconds; ``count`` values seen."""

    p50: float = 0.0
    p95: float = 0.0
    p99: float = 0.0
    max: float = 0.0
    count: int = 0

    def as_dict(self) -> dict[str, float | int]:
        return {
            "p50": self.p50,
            "p95": self.p95,
            "p99": self.p99,
            "max": self.max,
            "count": self.count,
        }


class Histogram:
    """Durations in microseconds: :meth:`record`, then :meth:`percentiles`."""

    __slots__ = ("_buckets", "_fixed", "max_us", "sum_us")

    def __init__(self) -> None:
        self._buckets = [0] * _BUCKETS
        self._fixed = [0] * (len(FIXED_BOUNDS_US) + 1)
        self.sum_us = 0
        self.max_us = 0

    def record(self, micros: int) -> None:
        # This runs twice per checkout: table lookups for the usual values,
        # _index() inlined and a C bisect for the rest, no Python call, and no
        # separate count to increment.
        if micros < _TABLED:
            if micros >= 0:
                index = _BUCKET_OF[micros]
                fixed = _FIXED_OF[micros]
            else:
                index = fixed = 0
        else:
            shift = micros.bit_length() - _SUB_BITS
            index = _SUB + (shift - 1) * _HALF + ((micros >> shift) - _HALF)
            if index >= _BUCKETS:
                index = _BUCKETS - 1
            fixed = bisect_right(FIXED_BOUNDS_US, micros)
        self._buckets[index] += 1
        self._fixed[fixed] += 1
        self.sum_us += micros
        if micros > self.max_us:
            self.max_us = micros

    def record_seconds(self, seconds: float) -> None:
        self.record(int(seconds * 1_000_000))

    @property
    def count(self) -> int:
        """How many values were recorded: the sum of the buckets (read rarely, kept for free)."""
        return sum(self._buckets)

    def reset(self) -> None:
        self._buckets = [0] * _BUCKETS
        self._fixed = [0] * (len(FIXED_BOUNDS_US) + 1)
        self.sum_us = 0
        self.max_us = 0

    def buckets(self) -> list[int]:
        """A copy of the bucket counts (for per-interval percentiles by difference)."""
        return list(self._buckets)

    def fixed_counts(self) -> list[int]:
        """A copy of the counts per fixed bucket (:data:`FIXED_BOUNDS_US`, then the rest)."""
        return list(self._fixed)

    def value_at(self, quantile: float) -> int:
        """The value (µs) at ``quantile`` (0..1): the upper bound of its bucket, capped at max."""
        return min(quantile_of(list(self._buckets), quantile), self.max_us)

    def percentiles(self) -> Percentiles:
        # One copy of the buckets, so the percentiles and the count agree.
        buckets = list(self._buckets)
        max_us = self.max_us

        def ms_at(quantile: float) -> float:
            return min(quantile_of(buckets, quantile), max_us) / 1000.0

        return Percentiles(
            p50=ms_at(0.50),
            p95=ms_at(0.95),
            p99=ms_at(0.99),
            max=max_us / 1000.0,
            count=sum(buckets),
        )
