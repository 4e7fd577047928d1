"""The idle connections of a queue pool, and the line of callers waiting for one.

SQLAlchemy's queue lets a thread that returns a connection take it straight
back before the waiter it notified wakes up, so under contention some callers
starve until their timeout while others never wait. Here a returned connection
goes to the caller that has waited longest, handed over under the queue's lock:
nobody can take it in between. Each waiter sleeps on a lock of its own, so a
return wakes exactly one thread.

How a waiter sleeps and wakes is the waiter's (:class:`_Waiter`): the asyncio
twin (:mod:`.async_handoff`) keeps the line and swaps the lock for a future.

The class keeps the interface of ``sqlalchemy.util.queue.Queue`` that
``QueuePool`` uses (``maxsize``, ``use_lifo``, ``qsize()``, ``empty()``,
``full()``, ``put()``, ``get()``), so the pool's accounting works unchanged.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

from sqlalchemy.util.queue import Empty, Full, QueueCommon

__all__ = ["Empty", "Full", "HandOffQueue", "LineFull", "TryAgain"]

T = TypeVar("T")


class LineFull(Exception):
    """``max_waiting`` callers already wait: the caller is refused instead of queued."""


class TryAgain(Exception):
    """Room to open a connection appeared: the caller should try, not wait."""


class _Waiter(Generic[T]):
    """A caller in line: what it was handed, and whether anything was (None: room to open)."""

    __slots__ = ("item", "woken")

    def __init__(self) -> None:
        self.item: T | None = None
        self.woken = False

    def hand(self, item: T | None) -> None:
        """Give ``item`` (None: room to open one) to this waiter; called under the queue's lock."""
        self.item = item
        self.woken = True
        self._wake()

    def sleep(self, timeout: float | None) -> bool:
        """Until handed something (True) or ``timeout`` seconds passed (False)."""
        raise NotImplementedError

    def _wake(self) -> None:
        raise NotImplementedError


class _ThreadWaiter(_Waiter[T]):
    __slots__ = ("lock",)

    def __init__(self) -> None:
        super().__init__()
        # Held from the start: the waiter blocks acquiring it until a giver releases it.
        self.lock = threading.Lock()
        self.lock.acquire()

    def sleep(self, timeout: float | None) -> bool:
        return self.lock.acquire(timeout=-1 if timeout is None else max(timeout, 0.0))

    def _wake(self) -> None:
        self.lock.release()


class HandOffQueue(QueueCommon[T]):
    """Idle items (FIFO, or LIFO with ``use_lifo``) and a first-come, first-served line."""

    def __init__(self, maxsize: int = 0, use_lifo: bool = False, max_waiting: int = 0) -> None:
        self.maxsize = maxsize
        self.use_lifo = use_lifo
        #: The longest line allowed (0: no limit).
        self.max_waiting = max_waiting
        self._idle: deque[T] = deque()
        self._line: deque[_Waiter[T]] = deque()
        self._mutex = threading.Lock()

    def qsize(self) -> int:
        return len(self._idle)

    def empty(self) -> bool:
        return not self._idle

    def full(self) -> bool:
        return 0 < self.maxsize <= len(self._idle)

    def put_nowait(self, item: T) -> None:
        self.put(item, False)

    def get_nowait(self) -> T:
        return self.get(False)

    def waiting(self) -> int:
        """Callers in line now."""
        return len(self._line)

    def put(self, item: T, block: bool = True, timeout: float | None = None) -> None:
        """Hand ``item`` to the first in line, or keep it idle; ``Full`` if no room.

        Never blocks (the pool always puts without waiting); the arguments are
        the queue interface's.
        """
        with self._mutex:
            if self._line:
                self._line.popleft().hand(item)
                return
            if 0 < self.maxsize <= len(self._idle):
                raise Full
            self._idle.append(item)

    def get(
        self,
        block: bool = True,
        timeout: float | None = None,
        *,
        first: bool = False,
        can_open: Callable[[], bool] | None = None,
    ) -> T:
        """An idle item, or (``block``) the next one returned, within ``timeout`` seconds.

        ``Empty`` when none is idle and ``block`` is false, or the time ran out;
        ``LineFull`` when ``max_waiting`` callers already wait; ``TryAgain``
        when ``can_open()`` says the pool may open a connection instead, or
        when it came to say so while this caller waited. ``first`` puts the
        caller at the head of the line (one woken that way and beaten to the
        room by another thread).
        """
        with self._mutex:
            if self._idle:
                return self._idle.pop() if self.use_lifo else self._idle.popleft()
            if not block:
                raise Empty
            # Checked under the lock that wake_one() takes: room made after this
            # check finds this caller in line and wakes it.
            if can_open is not None and can_open():
                raise TryAgain
            if self.max_waiting and len(self._line) >= self.max_waiting:
                raise LineFull
            waiter = self._new_waiter()
            if first:
                self._line.appendleft(waiter)
            else:
                self._line.append(waiter)
        return self._wait(waiter, timeout)

    def wake_one(self) -> None:
        """Tell the first in line that the pool has room to open a connection."""
        with self._mutex:
            if self._line:
                self._line.popleft().hand(None)

    # What differs between threads and coroutines: how a waiter sleeps and wakes.

    def _new_waiter(self) -> _Waiter[T]:
        return _ThreadWaiter()

    def _wait(self, waiter: _Waiter[T], timeout: float | None) -> T:
        """What ``waiter`` (in line) is handed within ``timeout`` seconds."""
        if not waiter.sleep(timeout):
            self._leave_unless_woken(waiter)
            # Woken between the timeout and the lock: what it was given is its own.
        return self._handed(waiter)

    def _leave_unless_woken(self, waiter: _Waiter[T]) -> None:
        """Out of line with ``Empty`` if nobody handed ``waiter`` anything yet."""
        with self._mutex:
            if not waiter.woken:
                self._line.remove(waiter)
                raise Empty

    @staticmethod
    def _handed(waiter: _Waiter[T]) -> T:
        if waiter.item is None:
            raise TryAgain
        return waiter.item
