"""The choice of a replica, from what the samples say, and the positions a context remembers."""

from __future__ import annotations

import asyncio
import collections
import contextvars
import time

import pytest

from mingus_sessions._core.breaker import CircuitBreaker
from mingus_sessions._core.replicas import (
    ReplicaRouter,
    adopt_positions,
    commit_position,
    context_positions,
    format_lsn,
    parse_lsn,
    pin_to_primary,
    pinned_to_primary,
    remember_commit,
)

REPLICAS = ("main@r1", "main@r2", "main@r3")


def router(max_lag: float = 5.0, **breakers: CircuitBreaker) -> ReplicaRouter:
    made = ReplicaRouter("main", REPLICAS, max_lag, lambda name: breakers.get(name))
    now = time.monotonic()
    for status in made.statuses.values():
        status.reachable, status.lag, status.sampled_at = True, 0.0, now
        status.replay_position = 100
    return made


def chosen(made: ReplicaRouter, after: int | None = None) -> list[tuple[str, bool]]:
    return made.candidates(after)


def test_reads_go_round_the_eligible_replicas_evenly() -> None:
    made = router()
    firsts = collections.Counter(chosen(made)[0][0] for _ in range(300))
    assert firsts == dict.fromkeys(REPLICAS, 100)
    assert {name for name, _check in chosen(made)} == set(REPLICAS)


def test_a_replica_is_skipped_when_unreachable_promoted_too_far_behind_or_never_sampled() -> None:
    made = router(max_lag=2.0)
    statuses = made.statuses
    statuses["main@r1"].reachable = False
    statuses["main@r2"].lag = 2.5
    assert [name for name, _ in chosen(made)] == ["main@r3"]
    statuses["main@r3"].in_recovery = False
    assert chosen(made) == []
    fresh = ReplicaRouter("main", REPLICAS, 2.0, lambda name: None)
    assert fresh.candidates(None) == [], "no sample yet: the primary serves"


def test_an_old_sample_counts_its_age_as_lag() -> None:
    made = router(max_lag=2.0)
    for status in made.statuses.values():
        status.lag = 0.5
    made.statuses["main@r1"].sampled_at -= 1.0  # 0.5 + 1.0: still within 2
    made.statuses["main@r2"].sampled_at -= 3.0  # 0.5 + 3.0: the sampler is stuck
    assert {name for name, _ in chosen(made)} == {"main@r1", "main@r3"}


def test_a_replica_whose_breaker_is_open_is_skipped() -> None:
    breaker = CircuitBreaker(failure_threshold=1, recovery_timeout=60, name="main@r2")
    made = router(**{"main@r2": breaker})
    breaker.record_failure()
    assert breaker.state == "open"
    assert "main@r2" not in {name for name, _ in chosen(made)}


def test_replicas_short_of_a_position_come_last_and_are_checked() -> None:
    made = router()
    made.statuses["main@r2"].replay_position = 50
    for _ in range(6):
        order = chosen(made, after=80)
        assert order[-1] == ("main@r2", True)
        assert all(check is False for _name, check in order[:-1])
    made.saw_replay("main@r2", 90)
    assert ("main@r2", False) in chosen(made, after=80)
    made.saw_replay("main@r2", 10)  # an older answer never moves it back
    assert made.statuses["main@r2"].replay_position == 90


@pytest.mark.parametrize(
    ("token", "position"),
    [("0/0", 0), ("0/16B3748", 0x16B3748), ("16/B374D848", (0x16 << 32) | 0xB374D848)],
)
def test_positions_read_and_write_as_postgresql_does(token: str, position: int) -> None:
    assert parse_lsn(token) == position
    assert format_lsn(position) == token


@pytest.mark.parametrize("token", ["", "16", "16/", "/1", "x/1", "1/2/3", "123456789/0", None, 7])
def test_a_malformed_token_is_refused_with_what_to_pass(token: object) -> None:
    with pytest.raises(ValueError, match="is not a commit token: pass what last_commit_token"):
        parse_lsn(token)  # type: ignore[arg-type]


def test_a_context_remembers_its_latest_commit_and_a_task_its_own() -> None:
    def scenario() -> None:
        assert commit_position("main") is None
        remember_commit("main", 10)
        remember_commit("main", 5)  # older: kept at 10
        assert commit_position("main") == 10

        async def in_a_task() -> None:
            remember_commit("main", 20)
            remember_commit("other", 3)

        asyncio.run(in_a_task())
        assert commit_position("main") == 10, "a task's commits stay in its own context"
        assert commit_position("other") is None

    contextvars.copy_context().run(scenario)
    assert commit_position("main") is None, "nor do they leak out of a context"


def test_a_task_of_ours_hands_its_positions_back() -> None:
    def scenario() -> None:
        remember_commit("main", 10)

        def in_a_copy() -> object:
            remember_commit("main", 30)
            pin_to_primary("other", 60)
            return context_positions()

        adopt_positions(contextvars.copy_context().run(in_a_copy))  # type: ignore[arg-type]
        assert commit_position("main") == 30
        assert pinned_to_primary("other")
        assert not pinned_to_primary("main")

    contextvars.copy_context().run(scenario)


def test_a_pin_lasts_its_seconds() -> None:
    def scenario() -> None:
        pin_to_primary("main", 0.05)
        assert pinned_to_primary("main")
        time.sleep(0.06)
        assert not pinned_to_primary("main")

    contextvars.copy_context().run(scenario)


def test_a_tests_reset_forgets_this_contexts_positions() -> None:
    from mingus_sessions._core.state import ProcessState

    def scenario() -> None:
        remember_commit("main", 10)
        pin_to_primary("main", 60)
        ProcessState().reset()
        assert commit_position("main") is None
        assert not pinned_to_primary("main")

    contextvars.copy_context().run(scenario)
