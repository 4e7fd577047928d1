"""A circuit breaker whose state the processes of a fleet share (``CIRCUIT_BREAKER["SHARED"]``).

Plain Python. The breaker is the per-process :class:`CircuitBreaker`, plus a
:class:`SharedState` (the glue puts it in the fleet cache) that it tells of
each opening and closing and reads at most once every :data:`READ_INTERVAL`
seconds, so that a breaker opened by one process opens every other within a
second, and a trial that closes it closes them all. The half-open trial also
needs a lease from the shared state: one process of the fleet makes it.

The shared record of a pool is ``{"open": bool, "at": wall-clock time,
"failures": int}``; the newest ``at`` wins. An opening is an *epoch*, named by
its ``at``: one trial lease per epoch, which expires after a recovery timeout
(a process that dies during its trial cannot wedge the fleet), so a process
that has not yet read a newer opening can never send a second trial for it.
The shared state never raises: a cache it cannot reach reads as "nothing
known" and grants every lease, so each process keeps its own breaker.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from .breaker import CircuitBreaker

__all__ = ["READ_INTERVAL", "SharedCircuitBreaker", "SharedState"]

#: Seconds between two reads of the shared state by one breaker (and between two
#: asks for a trial lease while another process holds it).
READ_INTERVAL = 1.0


class SharedState(Protocol):
    """Where the breakers of a fleet meet; none of its methods raises."""

    def read(self, name: str) -> Mapping[str, Any] | None:
        """The pool's shared record, or None (none yet, or the state cannot be reached)."""

    def publish(self, name: str, record: Mapping[str, Any]) -> None:
        """Store the pool's record for every process."""

    def acquire_trial(self, name: str, epoch: float, seconds: float) -> bool:
        """Take the lease on the trial of the opening ``epoch`` for ``seconds``; whether taken."""

    def release_trial(self, name: str, epoch: float) -> None:
        """Give the lease back (the trial proved nothing): another process may try."""


class SharedCircuitBreaker(CircuitBreaker):
    """A :class:`CircuitBreaker` that follows and feeds the fleet's shared state."""

    def __init__(
        self,
        failure_threshold: int = 5,
        recovery_timeout: float = 60.0,
        *,
        shared: SharedState,
        name: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(failure_threshold, recovery_timeout, name=name, clock=clock)
        self._shared = shared
        self._wall = wall_clock
        self._key = name or ""
        #: When (on ``clock``) the shared state is next read; 0 reads at the first call.
        self._next_read = 0.0
        #: The ``at`` of the newest record this breaker knows (its own or read).
        self._known_at = 0.0
        #: The epoch of the trial lease this process holds, if any.
        self._lease: float | None = None
        self._reading = threading.Lock()

    def before_call(self) -> bool:
        # Closed and read less than READ_INTERVAL ago: one clock read more than
        # the per-process breaker, no Python call, no round trip.
        if self._clock() >= self._next_read:
            self._sync()
        if not self._open:
            return False
        return self._admit()

    def _admit(self) -> bool:
        if not super()._admit():
            return False
        epoch = self._known_at
        if self._shared.acquire_trial(self._key, epoch, self.recovery_timeout):
            self._lease = epoch
            return True
        # Another process is making the trial: ask again after the next read,
        # which brings its outcome (a new opening, or closed).
        with self._lock:
            now = self._clock()
            self._trial_until = now + READ_INTERVAL
            retry_in = self._wait_left(now)
        raise self._open_error(retry_in)

    @property
    def state(self) -> str:
        if self._clock() >= self._next_read:
            self._sync()
        return super().state

    def retry_in(self) -> float:
        if self._clock() >= self._next_read:
            self._sync()
        return super().retry_in()

    def record_success(self) -> None:
        if self._open or self._failures:
            with self._lock:
                was_open = self._open
                self._open = False
                self._failures = 0
                self._trial_until = 0.0
                self._lease = None
                if was_open:
                    at = self._known_at = self._wall()
            if was_open:
                self._shared.publish(self._key, {"open": False, "at": at, "failures": 0})

    def record_failure(self) -> None:
        with self._lock:
            self._failures += 1
            if not (self._open or self._failures >= self.failure_threshold):
                return
            self._open = True
            self._opened_at = self._clock()
            self._trial_until = 0.0
            # A new epoch: its trial needs a lease of its own, and the old
            # epoch's lease lapses by itself, so a process that has not read
            # this opening yet cannot take it for a second trial.
            self._lease = None
            at = self._known_at = self._wall()
            failures = self._failures
        self._shared.publish(self._key, {"open": True, "at": at, "failures": failures})

    def release_trial(self) -> None:
        if self._open:
            with self._lock:
                self._trial_until = 0.0
                lease, self._lease = self._lease, None
            if lease is not None:
                self._shared.release_trial(self._key, lease)

    def reset(self) -> None:
        """Close the breaker by hand, for the whole fleet."""
        with self._lock:
            self._open = False
            self._failures = 0
            self._trial_until = 0.0
            self._lease = None
            at = self._known_at = self._wall()
        self._shared.publish(self._key, {"open": False, "at": at, "failures": 0})

    def _sync(self) -> None:
        """Read the shared record (one thread of the process at a time) and follow a newer one."""
        if not self._reading.acquire(blocking=False):
            return  # another thread is reading it now
        try:
            now = self._clock()
            if now < self._next_read:
                return
            # Set before the round trip: the other threads keep to the hot path.
            self._next_read = now + READ_INTERVAL
            record = self._shared.read(self._key)
            if record is None:
                return
            at, is_open, failures = _parse(record)
            if at is None or at <= self._known_at:
                return
            with self._lock:
                if at <= self._known_at:
                    return
                self._known_at = at
                self._trial_until = 0.0
                self._lease = None
                if is_open:
                    self._open = True
                    # Its age on the wall clock, placed on this process's clock.
                    self._opened_at = self._clock() - max(self._wall() - at, 0.0)
                    self._failures = max(failures, self._failures)
                else:
                    self._open = False
                    self._failures = 0
        finally:
            self._reading.release()

    def _after_fork(self) -> None:
        super()._after_fork()
        self._reading = threading.Lock()
        self._lease = None  # the parent's trial, if any, is the parent's to report
        self._next_read = 0.0


def _parse(record: Mapping[str, Any]) -> tuple[float | None, bool, int]:
    """``(at, open, failures)`` of a shared record; ``at`` None when it is malformed."""
    at = record.get("at")
    failures = record.get("failures")
    if isinstance(at, bool) or not isinstance(at, int | float):
        return None, False, 0
    if isinstance(failures, bool) or not isinstance(failures, int):
        failures = 0
    return float(at), bool(record.get("open")), failures
