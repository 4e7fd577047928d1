"""Pool state that SQLAlchemy's pools do not expose, and the queue pool that keeps it.

Plain SQLAlchemy. :class:`PoolProbe` holds, per named pool, what the error
messages and the metrics need beyond ``size()``, ``checkedin()``,
``checkedout()`` and ``overflow()``: how many callers wait for a connection
right now and how many checkouts had to queue since the last reset, the last
failure to open one, and (when monitoring is on) how long each checkout waited
and how many timed out.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from sqlalchemy import exc as sa_exc
from sqlalchemy.pool import ConnectionPoolEntry, QueuePool

from .histogram import Histogram

__all__ = ["ACQUIRE_STARTED", "PoolProbe", "WaitAwareQueuePool"]

#: The attribute of a connection record that holds when its checkout began
#: (``perf_counter``), from the pool to the metrics' checkout listener.
ACQUIRE_STARTED = "_mingus_acquire_started"


class PoolProbe:
    """Live facts about one named pool; survives ``dispose()`` and ``recreate()``."""

    __slots__ = (
        "_lock",
        "acquire",
        "last_connect_error",
        "last_connect_error_at",
        "name",
        "queued",
        "timeouts",
        "waiting",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self.waiting = 0
        #: Checkouts that found no idle connection and no overflow left, so queued
        #: for one (the evidence that a pool is too small, with the timeouts).
        self.queued = 0
        self.timeouts = 0
        #: Checkout waits in µs; None while monitoring is off (nothing is timed).
        self.acquire: Histogram | None = None
        self.last_connect_error: BaseException | None = None
        self.last_connect_error_at = 0.0
        self._lock = threading.Lock()

    def enter_wait(self) -> None:
        with self._lock:
            self.waiting += 1
            self.queued += 1

    def leave_wait(self) -> None:
        with self._lock:
            self.waiting -= 1

    def connect_failed(self, exc: BaseException) -> None:
        self.last_connect_error = exc
        self.last_connect_error_at = time.monotonic()

    def connected(self) -> None:
        if self.last_connect_error is not None:
            self.last_connect_error = None

    def recent_connect_error(self, within: float) -> BaseException | None:
        """The last connect failure if it happened less than ``within`` seconds ago."""
        error = self.last_connect_error
        if error is not None and time.monotonic() - self.last_connect_error_at <= within:
            return error
        return None

    def after_fork(self) -> None:
        # A child starts with no waiter of its own, and the parent's lock may
        # have been held by a thread that does not exist in the child.
        self._lock = threading.Lock()
        self.waiting = 0


class WaitAwareQueuePool(QueuePool):
    """A :class:`~sqlalchemy.pool.QueuePool` that counts the callers waiting for a slot."""

    # Log as SQLAlchemy's own QueuePool ("sqlalchemy.pool.impl.QueuePool.<pool>"),
    # so echo_pool and the project's "sqlalchemy" logging settings apply, and a
    # DEBUG level on the "mingus_sessions" logger does not turn on pool tracing.
    _sqla_logger_namespace = "sqlalchemy.pool.impl.QueuePool"

    def __init__(self, creator: Any, *, probe: PoolProbe | None = None, **kw: Any) -> None:
        super().__init__(creator, **kw)
        # Engine.dispose(close=True) disposes the pool, then replaces it by its
        # recreate(): the old one is retired, and closes what comes back to it.
        # (After a fork, dispose(close=False) only replaces it: the parent's
        # connections must not be closed from the child.)
        self._disposed = False
        self._retired = False
        self.probe = probe if probe is not None else PoolProbe(self._orig_logging_name or "")

    def _do_get(self) -> ConnectionPoolEntry:
        probe = self.probe
        # With monitoring on, the acquire wait runs from here to the checkout
        # event (so it includes pre-ping and connecting, as HikariCP's does);
        # the recorder's checkout listener reads the start from the record.
        started = time.perf_counter() if probe.acquire is not None else None
        try:
            # Lock-free when a connection is idle or overflow is left (the
            # usual case); only a caller that may block is counted as waiting.
            # The idle deque's length is read without the queue's mutex (its
            # qsize() takes it, in two Python calls): a stale answer only
            # decides whether this caller is counted as a waiter.
            if self._pool.queue or self._overflow < self._max_overflow:  # type: ignore[attr-defined]
                entry = super()._do_get()
            else:
                probe.enter_wait()
                try:
                    entry = super()._do_get()
                finally:
                    probe.leave_wait()
        except sa_exc.TimeoutError as exc:
            # QueuePool._do_get calls itself (this method) when it loses a race
            # for an overflow slot: count the timeout once, where it ends.
            if not getattr(exc, "_mingus_sessions_timeout_counted", False):
                exc._mingus_sessions_timeout_counted = True  # type: ignore[attr-defined]
                probe.timeouts += 1
            raise
        if started is not None:
            entry.__dict__[ACQUIRE_STARTED] = started
        return entry

    def dispose(self) -> None:
        self._disposed = True
        super().dispose()

    def _do_return_conn(self, record: ConnectionPoolEntry) -> None:
        if self._retired:
            # Out when the engine replaced this pool: it checks out from the
            # new one now, and nobody would ever take this one from here.
            record.close()
            return
        super()._do_return_conn(record)

    def recreate(self) -> QueuePool:
        fresh = super().recreate()
        if isinstance(fresh, WaitAwareQueuePool):
            fresh.probe = self.probe
        if self._disposed:
            self._retired = True
            super().dispose()  # a connection returned while it was being replaced
        return fresh
