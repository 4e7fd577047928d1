"""Pool state that SQLAlchemy's pools do not expose, and the queue pool that keeps it.

Plain SQLAlchemy. :class:`PoolProbe` holds, per named pool, what the error
messages and the metrics need beyond ``size()``, ``checkedin()``,
``checkedout()`` and ``overflow()``: how many callers wait for a connection
right now and how many checkouts had to queue since the last reset, the last
failure to open one, and (when monitoring is on) how long each checkout waited
and how many timed out.

:class:`WaitAwareQueuePool` is ``QueuePool`` with two changes of behaviour: a
returned connection goes to the caller that waited longest
(:mod:`.handoff`), and an idle connection's liveness is checked at checkout
without a round trip where the driver allows (:mod:`.liveness`), pinging only
those idle longer than ``PING_IDLE``. :class:`WaitAwareAsyncQueuePool` is the
same pool for async engines, as ``AsyncAdaptedQueuePool`` is ``QueuePool``'s:
its line (:mod:`.async_handoff`) suspends coroutines instead of threads.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import exc as sa_exc
from sqlalchemy.pool import ConnectionPoolEntry, QueuePool
from sqlalchemy.pool.base import _AsyncConnDialect

from .async_handoff import AsyncHandOffQueue
from .handoff import Empty, HandOffQueue, LineFull, TryAgain
from .histogram import Histogram
from .liveness import LivenessCheck

__all__ = [
    "ACQUIRE_STARTED",
    "CheckoutChecks",
    "PoolProbe",
    "QueueFullError",
    "WaitAwareAsyncQueuePool",
    "WaitAwareQueuePool",
]

#: The attribute of a connection record that holds when its checkout began
#: (``perf_counter``, while MONITORING is on), for the debug toolbar's checkout listener.
ACQUIRE_STARTED = "_mingus_acquire_started"
#: The attribute of a connection record that holds when it was last returned
#: (``monotonic``): how long it sat idle decides between a check and a ping.
RETURNED_AT = "_mingus_returned_at"


@dataclass(frozen=True, slots=True)
class CheckoutChecks:
    """What a queue pool checks before it hands out an idle connection.

    ``pre_ping``: True (check ``alive`` when idle at most ``ping_idle``
    seconds, else ping), "always" (ping every time) or False (nothing).
    ``alive`` is the driver's check without a round trip; None: always ping.
    """

    pre_ping: bool | str = False
    alive: LivenessCheck | None = None
    ping_idle: float = 1.0


class QueueFullError(sa_exc.TimeoutError):
    """A checkout refused at once: ``MAX_WAITING`` callers already wait."""


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

    # The queue pool calls these itself while ``acquire`` is set (MONITORING on):
    # the metrics' recorder keeps them; a bare probe has nothing to record.

    def checked_out(self, record: Any, started: float | None) -> None:
        """``record`` was handed out; ``started``: when its caller asked (``perf_counter``)."""

    def checked_in(self, record: Any) -> None:
        """``record`` came back to the pool (or was detached from it)."""


class WaitAwareQueuePool(QueuePool):
    """A ``QueuePool`` with fair hand-off, liveness checks and a count of waiting callers."""

    # Log as SQLAlchemy's own QueuePool ("sqlalchemy.pool.impl.QueuePool.<pool>"),
    # so echo_pool and the project's "sqlalchemy" logging settings apply, and a
    # DEBUG level on the "mingus_sessions" logger does not turn on pool tracing.
    _sqla_logger_namespace = "sqlalchemy.pool.impl.QueuePool"
    _queue_class = HandOffQueue[ConnectionPoolEntry]
    _pool: HandOffQueue[ConnectionPoolEntry]

    # Positional-or-keyword, not keyword-only: create_engine() hands a pool only
    # the arguments it finds among its class's named parameters.
    def __init__(
        self,
        creator: Any,
        pool_size: int = 5,
        max_overflow: int = 10,
        timeout: float = 30.0,
        use_lifo: bool = False,
        max_waiting: int = 0,
        checkout_checks: CheckoutChecks | None = None,
        probe: PoolProbe | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(
            creator,
            pool_size=pool_size,
            max_overflow=max_overflow,
            timeout=timeout,
            use_lifo=use_lifo,
            **kw,
        )
        self._pool.max_waiting = max_waiting
        self.checkout_checks = checkout_checks or CheckoutChecks()
        # Engine.dispose(close=True) disposes the pool, then replaces it by its
        # recreate(): the old one is retired, and closes what comes back to it.
        # (After a fork, dispose(close=False) only replaces it: the parent's
        # connections must not be closed from the child.)
        self._disposed = False
        self._retired = False
        self.probe = probe if probe is not None else PoolProbe(self._orig_logging_name or "")

    @property
    def max_waiting(self) -> int:
        return self._pool.max_waiting

    def _do_get(self) -> ConnectionPoolEntry:
        probe = self.probe
        # With monitoring on, the acquire wait runs from here to a connection in
        # hand (so it includes the liveness check and connecting, as HikariCP's
        # does), reported to the recorder below.
        started = time.perf_counter() if probe.acquire is not None else None
        try:
            entry = self._take()
        except sa_exc.TimeoutError:
            probe.timeouts += 1
            raise
        if started is not None:
            # Read by the debug toolbar's checkout listener, which runs next.
            entry.__dict__[ACQUIRE_STARTED] = started
            probe.checked_out(entry, started)
        return entry

    def _take(self) -> ConnectionPoolEntry:
        """An idle connection, else a new one if there is room, else one handed over in line."""
        queue = self._pool
        deadline: float | None = None
        first = False
        while True:
            try:
                return self._ready(queue.get(False))
            except Empty:
                pass
            if self._inc_overflow():
                try:
                    return self._create_connection()
                except BaseException:
                    self._dec_overflow()
                    raise
            if deadline is None:
                deadline = time.monotonic() + self._timeout
            record = self._wait_in_line(deadline, first)
            if record is not None:
                return self._ready(record)
            # Woken (or refused a place) because there is room to open one: try
            # again, at the head of the line should another thread take it first.
            first = True

    def _wait_in_line(self, deadline: float, first: bool) -> ConnectionPoolEntry | None:
        """The connection handed to this caller, or None to try opening one."""
        probe = self.probe
        probe.enter_wait()
        try:
            return self._pool.get(
                True, deadline - time.monotonic(), first=first, can_open=self._has_room
            )
        except TryAgain:
            return None
        except Empty:
            raise sa_exc.TimeoutError(
                f"QueuePool limit of size {self.size()} overflow {self.overflow()} reached, "
                f"connection timed out, timeout {self._timeout:0.2f}",
                code="3o7r",
            ) from None
        except LineFull:
            waiting = self._pool.max_waiting
            raise QueueFullError(
                f"QueuePool limit of size {self.size()} overflow {self.overflow()} reached "
                f"and {waiting} {'caller' if waiting == 1 else 'callers'} already wait "
                "(max_waiting)",
                code="3o7r",
            ) from None
        finally:
            probe.leave_wait()

    def _has_room(self) -> bool:
        return self._max_overflow == -1 or self._overflow < self._max_overflow

    def _dec_overflow(self) -> Literal[True]:
        super()._dec_overflow()
        # A connection that failed to open (or closed for good) leaves room
        # that a caller already in line would otherwise never see.
        self._pool.wake_one()
        return True

    def _ready(self, record: ConnectionPoolEntry) -> ConnectionPoolEntry:
        """``record`` with a live connection: checked, and reconnected if it has to be.

        The checkout that follows would reconnect it too (``get_connection()``);
        doing it here keeps the time that takes inside the acquire wait.
        """
        started: float = record.starttime  # type: ignore[attr-defined]
        if (
            record.dbapi_connection is None
            or self._invalidate_time > started
            or (self._recycle > -1 and time.time() - started > self._recycle)
        ):
            # Replaced anyway (invalidated, or past POOL_RECYCLE): no check first.
            self._reconnect(record)
        elif self.checkout_checks.pre_ping and not self._alive(record):
            self._reconnect(record)
        return record

    def _alive(self, record: ConnectionPoolEntry) -> bool:
        """The liveness check or ping of an idle connection; invalidated if it failed."""
        checks = self.checkout_checks
        connection: Any = record.dbapi_connection  # not None: _ready saw to it
        idle = time.monotonic() - record.__dict__.get(RETURNED_AT, 0.0)
        ping = checks.pre_ping == "always" or checks.alive is None or idle > checks.ping_idle
        try:
            fine = (
                self._dialect._do_ping_w_event(connection) if ping else checks.alive(connection)  # type: ignore[misc]
            )
        except BaseException as err:
            # Not a disconnect (those return False): the connection goes back
            # invalidated and the error reaches the caller, as with pool_pre_ping.
            record._checkin_failed(err, _fairy_was_created=False)  # type: ignore[attr-defined]
            raise
        if fine:
            return True
        self.logger.info(
            "Connection %r failed its %s at checkout; replacing it",
            connection,
            "ping" if ping else "liveness check",
        )
        if ping:
            # As pool_pre_ping does: a ping that fails suggests the server went
            # away, so every connection opened before now is replaced.
            self._invalidate_time = time.time()
        record.invalidate()
        return False

    @staticmethod
    def _reconnect(record: ConnectionPoolEntry) -> None:
        try:
            record.get_connection()  # type: ignore[attr-defined]
        except BaseException as err:
            record._checkin_failed(err, _fairy_was_created=False)  # type: ignore[attr-defined]
            raise

    def dispose(self) -> None:
        self._disposed = True
        super().dispose()

    def _do_return_conn(self, record: ConnectionPoolEntry) -> None:
        if self.probe.acquire is not None:
            self.probe.checked_in(record)
        if self._retired:
            # Out when the engine replaced this pool: it checks out from the
            # new one now, and nobody would ever take this one from here. A
            # caller still in this pool's line opens a connection of its own.
            record.close()
            self._pool.wake_one()
            return
        record.__dict__[RETURNED_AT] = time.monotonic()
        super()._do_return_conn(record)

    def recreate(self) -> QueuePool:
        self.logger.info("Pool recreating")
        fresh = self.__class__(
            self._creator,
            pool_size=self._pool.maxsize,
            max_overflow=self._max_overflow,
            timeout=self._timeout,
            use_lifo=self._pool.use_lifo,
            max_waiting=self._pool.max_waiting,
            checkout_checks=self.checkout_checks,
            probe=self.probe,
            pre_ping=self._pre_ping,
            recycle=self._recycle,
            echo=self.echo,
            logging_name=self._orig_logging_name,
            reset_on_return=self._reset_on_return,
            _dispatch=self.dispatch,
            dialect=self._dialect,
        )
        if self._disposed:
            self._retired = True
            super().dispose()  # a connection returned while it was being replaced
        return fresh


class WaitAwareAsyncQueuePool(WaitAwareQueuePool):
    """:class:`WaitAwareQueuePool` for ``create_async_engine()``: waiters are coroutines.

    Its code runs in SQLAlchemy's greenlet, in the task that checks out or
    returns a connection, so the pool's logic is the threaded one unchanged.
    """

    _is_asyncio = True
    _queue_class = AsyncHandOffQueue[ConnectionPoolEntry]
    _pool: AsyncHandOffQueue[ConnectionPoolEntry]
    # The dialect until the engine sets its own (a pool made by hand).
    _dialect = _AsyncConnDialect()
