"""The shared state of ``CIRCUIT_BREAKER["SHARED"]`` breakers, in the ``FLEET`` cache.

Glue under :mod:`mingus_sessions.breakers`: the :class:`~mingus_sessions._core.
shared_breaker.SharedState` that the core's shared breakers read and feed.

- ``mingus_sessions:fleet:breaker:<pool>``: the pool's record (open or closed, since when);
- ``mingus_sessions:fleet:breaker:<pool>:trial:<epoch>``: the lease on the half-open trial
  of one opening, taken with ``cache.add`` (atomic on every backend) and living a
  recovery timeout.

A cache that cannot be reached is logged once (and once when it is back) and left
alone for :data:`UNREACHABLE_PAUSE` seconds: meanwhile every read finds nothing and
every lease is granted, so each process runs its own breaker. Each round trip runs
in a thread of its own and is waited for at most :data:`CACHE_DEADLINE` seconds: a
cache that hangs (a Redis without socket timeouts behind a dead link) counts as
unreachable instead of holding the scope that asked.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from typing import Any

from . import conf
from ._core.state import state

__all__ = ["KEY", "UNREACHABLE_PAUSE", "FleetBreakerState", "shared_breaker_state"]

logger = logging.getLogger("mingus_sessions")

KEY = "mingus_sessions:fleet:breaker:"
#: Seconds a process leaves an unreachable cache alone before trying it again.
UNREACHABLE_PAUSE = 5.0
#: Seconds a scope waits at most for one round trip to the cache.
CACHE_DEADLINE = 0.5


class FleetBreakerState:
    """The breakers' shared records and trial leases in the Django cache ``alias``."""

    def __init__(self, alias: str) -> None:
        self.alias = alias
        #: True from the first failed round trip until one succeeds (logged at each change).
        self.unreachable = False
        self._retry_at = 0.0
        self._lock = threading.Lock()
        #: The value of each lease this process holds, by its key: only ours is released.
        self._leases: dict[str, str] = {}
        #: The thread the round trips run in (made on first use, and again after a fork).
        self._runner: _Runner | None = None

    def read(self, name: str) -> Mapping[str, Any] | None:
        if self._resting():
            return None
        try:
            found = self._bounded(lambda cache: cache.get(KEY + name))
        except Exception as exc:  # noqa: BLE001 - any failure is unreachable, logged once
            self._lost(exc)
            return None
        self._reached()
        return found if isinstance(found, Mapping) else None

    def publish(self, name: str, record: Mapping[str, Any]) -> None:
        if self._resting():
            return
        try:
            self._bounded(lambda cache: cache.set(KEY + name, dict(record), timeout=None))
        except Exception as exc:  # noqa: BLE001 - any failure is unreachable, logged once
            self._lost(exc)
            return
        self._reached()

    def acquire_trial(self, name: str, epoch: float, seconds: float) -> bool:
        if self._resting():
            return True  # each process for itself until the cache is back
        key = _lease_key(name, epoch)
        token = f"{os.getpid()}:{secrets.token_hex(8)}"
        try:
            # Whole seconds, rounded up: Redis and Memcached truncate fractions.
            lease = max(math.ceil(seconds), 1)
            taken = bool(self._bounded(lambda cache: cache.add(key, token, timeout=lease)))
        except Exception as exc:  # noqa: BLE001 - any failure is unreachable, logged once
            self._lost(exc)
            return True
        self._reached()
        if taken:
            self._leases[key] = token
        return taken

    def release_trial(self, name: str, epoch: float) -> None:
        key = _lease_key(name, epoch)
        token = self._leases.pop(key, None)
        if token is None or self._resting():
            return

        def release(cache: Any) -> None:
            # Only our own lease: once it lapsed, it may be another process's.
            if cache.get(key) == token:
                cache.delete(key)

        try:
            self._bounded(release)
        except Exception as exc:  # noqa: BLE001 - any failure is unreachable, logged once
            self._lost(exc)
            return
        self._reached()

    def after_fork(self) -> None:
        """In a forked child: a free lock, no lease of the parent's, and its own log line."""
        self._lock = threading.Lock()
        self._leases = {}
        self.unreachable = False
        self._retry_at = 0.0
        self._runner = None  # the parent's thread does not exist in the child

    def _bounded(self, operation: Callable[[Any], Any]) -> Any:
        """``operation(cache)`` in the runner's thread, waited for ``CACHE_DEADLINE`` at most.

        A round trip past the deadline raises ``TimeoutError``, which counts as
        an unreachable cache; it finishes (or hangs) in its thread, and the next
        ones queue behind it and time out too until the pause is over. The
        thread is a daemon: a cache that hangs never holds up the process's exit.
        """
        runner = self._runner
        if runner is None:
            with self._lock:
                runner = self._runner
                if runner is None:
                    runner = self._runner = _Runner()
        return runner.run(lambda: operation(self._cache()), CACHE_DEADLINE)

    def _cache(self) -> Any:
        from django.core.cache import caches

        return caches[self.alias]

    def _resting(self) -> bool:
        return self.unreachable and time.monotonic() < self._retry_at

    def _lost(self, exc: BaseException) -> None:
        with self._lock:
            self._retry_at = time.monotonic() + UNREACHABLE_PAUSE
            if self.unreachable:
                return
            self.unreachable = True
        logger.warning(
            'The fleet cache "%s" cannot be reached (%s: %s): each process runs its own '
            "circuit breakers until it is back",
            self.alias,
            type(exc).__name__,
            exc,
        )

    def _reached(self) -> None:
        if not self.unreachable:
            return
        with self._lock:
            if not self.unreachable:
                return
            self.unreachable = False
        logger.info('The fleet cache "%s" is reachable again: circuit breakers shared', self.alias)


class _Runner:
    """One daemon thread running the cache's round trips in turn (one cache client)."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = queue.SimpleQueue()
        threading.Thread(target=self._work, name="mingus-fleet-breaker", daemon=True).start()

    def run(self, job: Callable[[], Any], deadline: float) -> Any:
        outcome: Future[Any] = Future()
        self._jobs.put((job, outcome))
        return outcome.result(timeout=deadline)

    def _work(self) -> None:
        while True:
            job, outcome = self._jobs.get()
            try:
                outcome.set_result(job())
            except BaseException as exc:  # noqa: BLE001 - handed to the caller, who logs it
                outcome.set_exception(exc)


def _lease_key(name: str, epoch: float) -> str:
    return f"{KEY}{name}:trial:{epoch!r}"


def shared_breaker_state() -> FleetBreakerState:
    """This process's shared state of the breakers, on the cache named in ``FLEET["CACHE"]``."""
    found = state.shared_breakers
    if found is None:
        with state.lock:
            found = state.shared_breakers
            if found is None:
                found = FleetBreakerState(conf.get_config().fleet.cache)
                state.shared_breakers = found
    assert isinstance(found, FleetBreakerState)
    return found
