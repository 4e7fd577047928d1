"""The shared breaker's state machine across processes, on fake clocks and a shared dict.

Each :class:`SharedCircuitBreaker` here stands for one process: its own
monotonic clock (offset from the others, as processes' clocks are), one wall
clock for all, and one :class:`DictState` for the fleet's cache. The breaker
over the real cache is tested in ``tests/scopes/test_shared_breaker_scopes.py``
and across real processes in ``tests/fleet/test_shared_breaker_processes.py``.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import pytest

from mingus_sessions._core.breaker import CircuitBreaker
from mingus_sessions._core.errors import CircuitOpenError, DatabaseUnavailableError
from mingus_sessions._core.shared_breaker import READ_INTERVAL, SharedCircuitBreaker


class Wall:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


class Monotonic:
    """A process's monotonic clock: the wall clock shifted by an offset of its own."""

    def __init__(self, wall: Wall, offset: float) -> None:
        self.wall = wall
        self.offset = offset

    def __call__(self) -> float:
        return self.wall.now + self.offset


class DictState:
    """The fleet's shared state in a dict, with leases that lapse on the wall clock."""

    def __init__(self, wall: Wall) -> None:
        self.wall = wall
        self.records: dict[str, dict[str, Any]] = {}
        self.leases: dict[tuple[str, float], float] = {}
        self.reads = 0
        self.down = False

    def read(self, name: str) -> Mapping[str, Any] | None:
        self.reads += 1
        return None if self.down else self.records.get(name)

    def publish(self, name: str, record: Mapping[str, Any]) -> None:
        if not self.down:
            self.records[name] = dict(record)

    def acquire_trial(self, name: str, epoch: float, seconds: float) -> bool:
        if self.down:
            return True
        until = self.leases.get((name, epoch))
        if until is not None and until > self.wall.now:
            return False
        self.leases[(name, epoch)] = self.wall.now + seconds
        return True

    def release_trial(self, name: str, epoch: float) -> None:
        self.leases.pop((name, epoch), None)


def unavailable() -> None:
    raise DatabaseUnavailableError("refused", pool="p")


class Fleet:
    def __init__(self, processes: int, threshold: int = 2, recovery: float = 10.0) -> None:
        self.wall = Wall()
        self.shared = DictState(self.wall)
        self.breakers = [
            SharedCircuitBreaker(
                threshold,
                recovery,
                shared=self.shared,
                name="p",
                clock=Monotonic(self.wall, offset=-1e9 + 1000.0 * i),
                wall_clock=self.wall,
            )
            for i in range(processes)
        ]

    def tick(self, seconds: float) -> None:
        self.wall.now += seconds


def fail(breaker: CircuitBreaker, times: int = 1) -> None:
    for _ in range(times):
        with pytest.raises(DatabaseUnavailableError):
            breaker.call(unavailable)


def admitted(breaker: CircuitBreaker) -> bool | None:
    """``before_call``'s answer, or None when it fails fast."""
    try:
        return breaker.before_call()
    except CircuitOpenError:
        return None


def test_one_process_opens_the_breaker_of_every_process_within_a_read_interval() -> None:
    fleet = Fleet(2)
    a, b = fleet.breakers
    assert admitted(b) is False  # b has read the shared state: nothing yet
    fail(a, 2)
    assert a.state == "open"
    fleet.tick(READ_INTERVAL / 2)
    assert admitted(b) is False  # read half a second ago: not read again
    fleet.tick(READ_INTERVAL / 2)
    assert admitted(b) is None  # read now: open, fails fast
    assert b.state == "open"
    assert b.failures == 2


def test_a_new_process_fails_fast_at_its_first_call() -> None:
    fleet = Fleet(2)
    a, b = fleet.breakers
    fail(a, 2)
    with pytest.raises(CircuitOpenError, match=r"next trial in 10\.0 s"):
        b.before_call()


def test_the_opening_keeps_its_age_across_processes() -> None:
    """A process that learns of an opening 4 s late waits only the 6 s left of the timeout."""
    fleet = Fleet(2, recovery=10.0)
    a, b = fleet.breakers
    fail(a, 2)
    fleet.tick(4.0)
    assert admitted(b) is None
    assert b.retry_in() == pytest.approx(6.0)


def test_one_process_of_the_fleet_gets_the_half_open_trial() -> None:
    fleet = Fleet(3)
    a, b, c = fleet.breakers
    fail(a, 2)
    for other in (b, c):
        assert admitted(other) is None
    fleet.tick(10.0)
    answers = [admitted(breaker) for breaker in (c, a, b)]
    assert answers == [True, None, None]
    # The others ask again only after a read interval, and still fail fast.
    fleet.tick(READ_INTERVAL)
    assert [admitted(breaker) for breaker in (a, b)] == [None, None]


def test_a_failed_trial_opens_every_process_again_and_its_lease_is_not_reused() -> None:
    fleet = Fleet(2)
    a, b = fleet.breakers
    fail(a, 2)
    fleet.tick(10.0)
    assert admitted(b) is True
    b.record_failure()  # the trial failed: a new opening, published
    # a has not read it yet, but the old opening's lease is still b's: no second trial.
    assert admitted(a) is None
    fleet.tick(READ_INTERVAL)
    assert admitted(a) is None
    assert a.retry_in() == pytest.approx(10.0 - READ_INTERVAL)
    fleet.tick(10.0)
    assert [admitted(a), admitted(b)] == [True, None]


def test_a_successful_trial_closes_every_process_within_a_read_interval() -> None:
    fleet = Fleet(3)
    a, b, c = fleet.breakers
    fail(a, 2)
    for other in (b, c):
        admitted(other)
    fleet.tick(10.0)
    assert admitted(b) is True
    assert admitted(a) is None  # the lease is b's
    b.record_success()
    assert b.state == "closed"
    assert admitted(a) is None  # not read again yet: still open here
    fleet.tick(READ_INTERVAL)
    assert [admitted(a), admitted(c)] == [False, False]
    assert a.state == c.state == "closed"
    assert a.failures == 0


def test_a_trial_that_proves_nothing_lets_another_process_try_now() -> None:
    fleet = Fleet(2)
    a, b = fleet.breakers
    fail(a, 2)
    fleet.tick(10.0)
    assert admitted(a) is True
    assert admitted(b) is None
    a.release_trial()
    fleet.tick(READ_INTERVAL)
    assert admitted(b) is True


def test_a_lost_trial_expires_for_the_fleet_after_a_recovery_timeout() -> None:
    """The process making the trial died: its lease lapses, and another process tries."""
    fleet = Fleet(2)
    a, b = fleet.breakers
    fail(a, 2)
    fleet.tick(10.0)
    assert admitted(a) is True  # and a is never heard of again
    fleet.tick(READ_INTERVAL)
    assert admitted(b) is None
    fleet.tick(10.0)
    assert admitted(b) is True


def test_a_reset_by_hand_closes_the_fleet() -> None:
    fleet = Fleet(2)
    a, b = fleet.breakers
    fail(a, 2)
    assert admitted(b) is None
    fleet.tick(0.1)
    b.reset()
    fleet.tick(READ_INTERVAL)
    assert admitted(a) is False


def test_the_newest_record_wins() -> None:
    """An older record (a process that opened, then another that closed later) changes nothing."""
    fleet = Fleet(2)
    a, b = fleet.breakers
    fail(a, 2)
    fleet.tick(1.0)
    b.reset()  # closed, later than a's opening
    fleet.tick(READ_INTERVAL)
    assert admitted(a) is False
    fleet.tick(1.0)
    fail(b, 2)  # opened again, later still
    fleet.tick(READ_INTERVAL)
    assert admitted(a) is None


def test_reads_at_most_once_a_read_interval_while_closed_or_open() -> None:
    fleet = Fleet(2)
    a, b = fleet.breakers
    for _ in range(100):
        admitted(a)
    assert fleet.shared.reads == 1
    fail(b, 2)
    for step in range(40):  # 4 s, open here after the first read
        fleet.tick(0.1)
        for _ in range(10):
            admitted(a)
        assert fleet.shared.reads <= 2 + step // 10
    assert fleet.shared.reads == 5


def test_an_unreachable_state_leaves_each_process_its_own_breaker() -> None:
    fleet = Fleet(2)
    a, b = fleet.breakers
    fleet.shared.down = True
    fail(a, 2)
    fleet.tick(READ_INTERVAL)
    assert admitted(b) is False  # b knows nothing of a's opening
    fleet.tick(10.0)
    assert admitted(a) is True  # a's own trial, without a lease
    fail(b, 2)
    fleet.tick(10.0)
    assert admitted(b) is True


def test_a_malformed_record_is_ignored() -> None:
    fleet = Fleet(1)
    [a] = fleet.breakers
    fleet.shared.records["p"] = {"open": True, "at": "yesterday"}
    assert admitted(a) is False


def test_while_closed_and_read_recently_before_call_is_one_python_call() -> None:
    """The hot path of a shared breaker costs what the per-process one costs: its own call."""
    state = DictState(Wall())
    shared = SharedCircuitBreaker(2, 10.0, shared=state, name="p")  # the process's clocks
    plain = CircuitBreaker(2, 10.0)
    shared.before_call()  # the read is done

    def calls(breaker: CircuitBreaker) -> int:
        count = 0

        def profiler(frame: Any, event: str, arg: Any) -> None:
            nonlocal count
            if event == "call":
                count += 1

        sys.setprofile(profiler)
        try:
            for _ in range(100):
                breaker.before_call()
        finally:
            sys.setprofile(None)
        return count

    assert calls(shared) == calls(plain) == 100
    assert state.reads == 1
