"""A thread-safe circuit breaker: closed, open, half-open.

Plain Python. After ``failure_threshold`` consecutive connection failures the
breaker opens and every call fails fast with
:class:`~mingus_sessions.errors.CircuitOpenError`, making no connection
attempt. Once ``recovery_timeout`` has passed, exactly one caller is let
through as a trial: its success closes the breaker, its failure opens it again.
Only connection-class failures count; a data error proves nothing about
reachability and leaves the counts alone.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable
from typing import TypeVar

from .errors import CircuitOpenError, DatabaseConnectionError, PoolExhaustedError
from .translate import classify

__all__ = ["CLOSED", "HALF_OPEN", "OPEN", "CircuitBreaker", "counts_as_failure"]

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"

T = TypeVar("T")

#: Every breaker alive in this process, so that a forked child can renew their
#: locks (``ProcessState.after_fork_in_child``). Outside the registry on
#: purpose: a breaker a user builds (the class is public) registers itself here
#: as it is created, wherever that happens.
_instances: weakref.WeakSet[CircuitBreaker] = weakref.WeakSet()


def counts_as_failure(exc: BaseException) -> bool:
    """True for connection-class failures (and the disconnects they translate).

    A pool that is merely busy (``PoolExhaustedError`` without a failed connect
    behind it) is not a failure of the database: opening the breaker would turn
    a load spike into an outage.
    """
    found = classify(exc)
    if found is None or not issubclass(found, DatabaseConnectionError):
        return False
    if issubclass(found, CircuitOpenError):
        return False
    if issubclass(found, PoolExhaustedError):
        return isinstance(exc, PoolExhaustedError) and exc.unreachable
    return True


class CircuitBreaker:
    """CLOSED / OPEN / HALF_OPEN around calls to one database."""

    def __init__(
        self,
        failure_threshold: int = 5,
        recovery_timeout: float = 60.0,
        *,
        name: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if recovery_timeout <= 0:
            raise ValueError("recovery_timeout must be greater than 0")
        self.failure_threshold = failure_threshold
        self.recovery_timeout = recovery_timeout
        self.name = name
        self._clock = clock
        self._lock = threading.Lock()
        self._open = False
        self._failures = 0
        self._opened_at = 0.0
        self._trial_until = 0.0  # while a half-open trial is out, others fail fast
        _instances.add(self)

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self.name or ''} {self.state} failures={self._failures}>"

    @property
    def state(self) -> str:
        """``"closed"``, ``"open"`` or ``"half_open"`` (open past its recovery timeout)."""
        if not self._open:
            return CLOSED
        if self._clock() - self._opened_at >= self.recovery_timeout:
            return HALF_OPEN
        return OPEN

    @property
    def failures(self) -> int:
        """Consecutive connection failures counted so far."""
        return self._failures

    def retry_in(self) -> float:
        """Seconds until the breaker lets a trial through (0 when it is not open).

        While a half-open trial is out, that is when the trial expires: until
        it reports back, nobody else gets through.
        """
        if not self._open:
            return 0.0
        with self._lock:
            return self._wait_left(self._clock())

    def _wait_left(self, now: float) -> float:
        """Seconds from ``now`` until a trial may go: the recovery timeout, then the trial out."""
        return max(self._opened_at + self.recovery_timeout - now, self._trial_until - now, 0.0)

    def before_call(self) -> bool:
        """Admit a call: ``False`` for a normal call, ``True`` for the half-open trial.

        Raises :class:`CircuitOpenError` when the breaker is open, or half-open
        with its trial already out.
        """
        if not self._open:  # the hot path takes no lock
            return False
        return self._admit()

    def _admit(self) -> bool:
        """``before_call`` past the hot path: the breaker looked open."""
        with self._lock:
            if not self._open:
                return False
            now = self._clock()
            if now - self._opened_at >= self.recovery_timeout and now >= self._trial_until:
                # A trial that never reports back expires after another
                # recovery timeout, so a lost caller cannot wedge the breaker.
                self._trial_until = now + self.recovery_timeout
                return True
            retry_in = self._wait_left(now)
        raise self._open_error(retry_in)

    def _open_error(self, retry_in: float) -> CircuitOpenError:
        return CircuitOpenError(
            f"Circuit breaker of pool {self._label()} is open after {self._failures} consecutive "
            f"connection failures; failing fast without connecting (next trial in "
            f"{retry_in:.1f} s).",
            pool=self.name,
        )

    def record_success(self) -> None:
        """A call reached the database: close the breaker and clear the count."""
        if self._open or self._failures:
            with self._lock:
                self._open = False
                self._failures = 0
                self._trial_until = 0.0

    def record_failure(self) -> None:
        """A connection-class failure: count it, and open at the threshold."""
        with self._lock:
            self._failures += 1
            if self._open or self._failures >= self.failure_threshold:
                self._open = True
                self._opened_at = self._clock()
                self._trial_until = 0.0

    def release_trial(self) -> None:
        """The trial ended without proving anything: let the next caller try."""
        if self._open:
            with self._lock:
                self._trial_until = 0.0

    def reset(self) -> None:
        """Close the breaker by hand (operators, tests)."""
        with self._lock:
            self._open = False
            self._failures = 0
            self._trial_until = 0.0

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn()`` under the breaker and record its outcome."""
        trial = self.before_call()
        try:
            result = fn()
        except BaseException as exc:
            if counts_as_failure(exc):
                self.record_failure()
            elif trial:
                self.release_trial()
            raise
        self.record_success()
        return result

    def _label(self) -> str:
        return f'"{self.name}"' if self.name else "(unnamed)"

    def _after_fork(self) -> None:
        # The lock may have been held by a parent thread, and a half-open trial
        # may be out in one: neither thread exists in the child, so the child
        # gets a free lock and may send a trial of its own. Open or closed and
        # the failure count are kept: they are about the database.
        self._lock = threading.Lock()
        self._trial_until = 0.0


def renew_breaker_locks() -> None:
    """In a forked child: give every breaker of the process a free lock (see ``_after_fork``)."""
    for breaker in list(_instances):
        breaker._after_fork()
