"""The replica rows (``bench/replica_rows.py``): they time the choice a read-only scope makes."""

from __future__ import annotations

from bench import bench_suite, replica_rows


def test_the_rows_time_each_kind_of_choice_against_the_target() -> None:
    rows = replica_rows.rows(rounds=2, verbose=False)
    assert [row.name for row in rows] == [
        "Choosing a replica: no commit in this context (2 eligible)",
        "Choosing a replica: a commit every sample shows replayed",
        "Choosing a replica: a commit no sample shows yet (ordered for a check)",
    ]
    for row in rows:
        assert row.a_us > 0
        assert row.met is (row.a_us < replica_rows.TARGET_US)


def test_the_suite_prints_them_alone() -> None:
    assert bench_suite.parse_args(["--only", "replicas"]).only == "replicas"
