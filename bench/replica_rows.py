"""What choosing a replica costs a read-only scope (``--only replicas``).

The choice reads memory only: this context's commit position, its pin to the
primary, and the router's last samples of each replica (eligibility, the turn).
Timed in rounds of many choices, with two eligible replicas, as a read-only
scope makes it before it connects:

- without a position (this context committed nothing on the primary);
- with a position that every sample already shows replayed;
- with a position no sample shows yet (the replicas are ordered for a check).

The target is absolute (under 100 µs per choice), so each row is a single figure:
the median over rounds of the mean µs per choice.
"""

from __future__ import annotations

import contextvars
import statistics
import time

from bench.rows import Row, single_figure
from mingus_sessions._core.replicas import ReplicaRouter, pinned_to_primary, remember_commit
from mingus_sessions.replicas import required_position

CHOICES = 20_000
TARGET_US = 100.0


def _router() -> ReplicaRouter:
    router = ReplicaRouter("main", ("main@r1", "main@r2"), 5.0, lambda name: None)
    now = time.monotonic()
    for status in router.statuses.values():
        status.reachable, status.lag, status.sampled_at = True, 0.2, now
        status.replay_position = 1_000
    return router


def _time_choices(router: ReplicaRouter, position: int | None, rounds: int) -> list[float]:
    def choose(n: int) -> None:
        for _ in range(n):
            after = required_position("main", None)
            if not pinned_to_primary("main"):
                router.candidates(after)

    def in_context() -> list[float]:
        if position is not None:
            remember_commit("main", position)
        choose(CHOICES // 10)
        found = []
        for _ in range(rounds):
            started = time.perf_counter()
            choose(CHOICES)
            found.append((time.perf_counter() - started) / CHOICES * 1e6)
        return found

    return contextvars.copy_context().run(in_context)


def rows(rounds: int, verbose: bool) -> list[Row]:
    found = []
    for name, position in (
        ("Choosing a replica: no commit in this context (2 eligible)", None),
        ("Choosing a replica: a commit every sample shows replayed", 900),
        ("Choosing a replica: a commit no sample shows yet (ordered for a check)", 2_000),
    ):
        samples = _time_choices(_router(), position, rounds)
        median = statistics.median(samples)
        if verbose:
            print(f"    {name}: " + " ".join(f"{s:.2f}" for s in samples), flush=True)
        row = single_figure(name, median, f"< {TARGET_US:g} µs per choice", median < TARGET_US)
        row.notes.append(f"median of {rounds} rounds of {CHOICES:,} choices")
        found.append(row)
    return found
