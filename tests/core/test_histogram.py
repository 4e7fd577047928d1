"""The fixed-size histogram behind every duration metric."""

from __future__ import annotations

import random

from mingus_sessions._core import histogram
from mingus_sessions._core.histogram import Histogram, quantile_of


def test_the_lookup_table_agrees_with_the_bucket_formula() -> None:
    """Values below the table's end are looked up; every lookup is the computed bucket."""
    table = histogram._BUCKET_OF
    assert len(table) == histogram._TABLED
    assert all(table[value] == histogram._index(value) for value in range(len(table)))


def test_values_on_both_sides_of_the_table_land_in_their_buckets() -> None:
    edge = histogram._TABLED
    for value in (0, 1, 31, 32, 33, 63, 64, edge - 1, edge, edge + 1, 10**6, 2**45):
        found = Histogram()
        found.record(value)
        [index] = [i for i, n in enumerate(found.buckets()) if n]
        assert index == histogram._index(value), value
        assert found.count == 1
        assert found.max_us == found.sum_us == value


def test_a_negative_duration_counts_in_the_first_bucket() -> None:
    """A clock that stepped back must not index the table from its end."""
    found = Histogram()
    found.record(-5)
    assert found.buckets()[0] == 1
    assert found.count == 1


def test_percentiles_are_within_one_bucket_of_the_exact_values() -> None:
    rng = random.Random(7)
    values = [int(rng.lognormvariate(7, 2)) for _ in range(20_000)]
    found = Histogram()
    for value in values:
        found.record(value)
    ordered = sorted(values)
    assert found.count == len(values)
    assert found.sum_us == sum(values)
    assert found.max_us == ordered[-1]
    for quantile in (0.5, 0.95, 0.99):
        exact = ordered[int(quantile * len(ordered) + 0.999999) - 1]
        measured = found.value_at(quantile)
        # The bucket's upper bound: at most 1/16 (one bucket) above the exact value.
        assert exact <= measured <= exact * (1 + 1 / 16), quantile
    shown = found.percentiles()
    assert shown.count == len(values)
    assert shown.p50 == found.value_at(0.5) / 1000.0


def test_memory_does_not_grow_with_the_number_of_values() -> None:
    found = Histogram()
    before = len(found.buckets())
    for value in range(0, 5_000_000, 7):
        found.record(value)
    assert len(found.buckets()) == before
    found.reset()
    assert (found.count, found.sum_us, found.max_us) == (0, 0, 0)
    assert quantile_of(found.buckets(), 0.99) == 0


# -- the fixed buckets on OpenTelemetry's boundaries ------------------------------------------


def _fixed_by_hand(values: list[int]) -> list[int]:
    """Per fixed bucket: the values below its bound and at or above the previous one."""
    bounds = histogram.FIXED_BOUNDS_US
    counts = [0] * (len(bounds) + 1)
    for value in values:
        counts[sum(1 for bound in bounds if bound <= value)] += 1
    return counts


def test_fixed_bounds_are_opentelemetrys_advisory_boundaries() -> None:
    """1, 5, 10, 50, 100, 500 ms, 1, 5, 10 s (db.client.operation.duration), in µs."""
    seconds = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10]
    assert list(histogram.FIXED_BOUNDS_US) == [round(s * 1_000_000) for s in seconds]


def test_fixed_buckets_count_exactly_on_both_sides_of_each_bound() -> None:
    """A value below a bound counts under it, the bound itself above: exact, whatever the
    log-linear bucket holding it (the table's values and the bisected ones alike)."""
    edge = histogram._TABLED
    values = [-3, 0, 1, edge - 1, edge, edge + 1, 2**45]
    for bound in histogram.FIXED_BOUNDS_US:
        values += [bound - 1, bound, bound + 1]
    found = Histogram()
    for value in values:
        found.record(value)
    assert found.fixed_counts() == _fixed_by_hand([max(v, 0) for v in values])
    assert sum(found.fixed_counts()) == found.count


def test_fixed_buckets_agree_with_random_durations_and_reset() -> None:
    rng = random.Random(11)
    values = [int(rng.lognormvariate(9, 2.5)) for _ in range(20_000)]
    found = Histogram()
    for value in values:
        found.record(value)
    assert found.fixed_counts() == _fixed_by_hand(values)
    found.reset()
    assert found.fixed_counts() == [0] * (len(histogram.FIXED_BOUNDS_US) + 1)
