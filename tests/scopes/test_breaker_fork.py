"""Fork safety of the breakers' locks and of the package's other module locks.

A parent thread holds every lock at the moment of ``os.fork()``; the thread
does not exist in the child, so a lock copied as it was would stay held there
forever. The child must get free locks, a breaker it can use (with no half-open
trial left out by the parent), and no share in the parent's open sessions.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import pytest

from mingus_sessions import CircuitOpenError, breakers, session_scope
from mingus_sessions._core.breaker import CircuitBreaker
from mingus_sessions._core.state import state
from tests.helpers import run_in_a_forked_child


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@contextmanager
def held_by_a_thread(acquire: Callable[[threading.Event, threading.Event], None]) -> Iterator[None]:
    """Run ``acquire(held, release)`` in a thread; yield once it holds its lock."""
    held, release = threading.Event(), threading.Event()
    thread = threading.Thread(target=acquire, args=(held, release), daemon=True)
    thread.start()
    try:
        assert held.wait(5.0), "the thread never took its lock"
        yield
    finally:
        release.set()
        thread.join(5.0)


def holding(lock: Any) -> Callable[[threading.Event, threading.Event], None]:
    def hold(held: threading.Event, release: threading.Event) -> None:
        with lock:
            held.set()
            release.wait(10.0)

    return hold


def in_a_scope(held: threading.Event, release: threading.Event) -> None:
    """An open session of the parent's (no statement, so no connection)."""
    with session_scope():
        held.set()
        release.wait(10.0)


def acquire_or_fail(name: str, lock: Any) -> None:
    if not lock.acquire(timeout=2.0):
        raise AssertionError(f"{name} is still held in the child")
    lock.release()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork()")
def test_child_gets_free_locks_a_usable_breaker_and_no_parent_sessions() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(1, 30.0, name="forked", clock=clock)
    breaker.record_failure()
    clock.now = 30.0
    assert breaker.before_call() is True  # the parent's half-open trial is out
    pool_breaker = breakers.get_circuit_breaker()
    baseline = state.sessions.active_sessions

    def child() -> str:  # pragma: no cover - runs in the child
        acquire_or_fail("CircuitBreaker._lock", breaker._lock)
        acquire_or_fail("the registry's lock", state.lock)
        acquire_or_fail("state.transactions._lock", state.transactions._lock)
        # The trial's caller is a parent thread: the child sends a trial of its own.
        assert breaker.state == "half_open"
        assert breaker.before_call() is True
        breaker.record_success()
        assert breaker.state == "closed"
        breaker.record_failure()
        assert breaker.state == "open"
        # The pool's breaker is the parent's, and the registry still builds new ones.
        assert breakers.get_circuit_breaker() is pool_breaker
        pool_breaker.record_failure()
        state.breakers.clear()
        assert breakers.get_circuit_breaker() is not pool_breaker
        state.transactions.record("forked", 0.001, failed=False)
        # The parent's open sessions are not the child's.
        assert state.sessions.active_sessions == 0, state.sessions.active_sessions
        with session_scope():
            assert state.sessions.active_sessions == 1
        assert state.sessions.active_sessions == 0
        return "ok"

    with ExitStack() as stack:
        # The scope first: it may need the registry's lock to build the engine.
        stack.enter_context(held_by_a_thread(in_a_scope))
        for lock in (breaker._lock, state.lock, state.transactions._lock):
            stack.enter_context(held_by_a_thread(holding(lock)))
        assert state.sessions.active_sessions == baseline + 1
        reply = run_in_a_forked_child(child)
    assert reply == "ok"
    # The parent is untouched: its trial is still out, its lock and breakers work.
    assert state.sessions.active_sessions == baseline
    with pytest.raises(CircuitOpenError):
        breaker.before_call()
    breaker.record_success()
    assert breaker.state == "closed"
    assert breakers.get_circuit_breaker() is pool_breaker
    assert pool_breaker.state == "closed"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork()")
def test_child_gets_a_free_registry_lock_and_no_ping_in_flight() -> None:
    from mingus_sessions.metrics import api

    # A health ping of the parent's that has not answered at the fork.
    in_flight = api._Ping("main")
    state.health_pings["main"] = in_flight

    def child() -> str:  # pragma: no cover - runs in the child
        acquire_or_fail("the registry's lock", state.lock)
        # Its thread is the parent's: the child checks the pool itself.
        assert not api._ping_running("main")
        assert api.check_pool("main", timeout=5.0)["detail"] != (
            "the previous check has not answered yet"
        )
        return "ok"

    try:
        with ExitStack() as stack:
            stack.enter_context(held_by_a_thread(holding(state.lock)))
            reply = run_in_a_forked_child(child)
        assert reply == "ok"
        assert api._ping_running("main")  # the parent's own ping is left alone
    finally:
        in_flight.done.set()
        state.health_pings.pop("main", None)
