"""The hand-off line of :mod:`.handoff` for coroutines: each waiter awaits a future of its own.

An async engine's pool runs its synchronous code in SQLAlchemy's greenlet,
inside the task that asked for a connection; a waiter suspends that task
through ``await_`` on a future created on the running loop. ``put()`` decides
who gets a returned connection under the queue's lock, as the threading line
does, and only then resolves the future: no coroutine can take the connection
in between, whatever the loop runs first.

A waiter whose wait ends by an exception (its task cancelled, say) leaves the
line; if it had been handed a connection in the meantime, it passes it on to
the next in line, or back to the idle ones, so that a cancellation never loses
a connection. A wake with nothing (room to open one) is passed on the same way.
"""

from __future__ import annotations

import asyncio
from typing import TypeVar

from sqlalchemy.util.concurrency import await_

from .handoff import HandOffQueue, _Waiter

__all__ = ["AsyncHandOffQueue"]

T = TypeVar("T")


class _FutureWaiter(_Waiter[T]):
    __slots__ = ("future",)

    def __init__(self) -> None:
        super().__init__()
        self.future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def sleep(self, timeout: float | None) -> bool:
        await_(_settled(self.future, timeout))
        return self.future.done()

    def _wake(self) -> None:
        loop = self.future.get_loop()
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self.future.set_result(None)
        else:
            # Returned from another thread (the pool's own code never does): the
            # future belongs to its loop, which must resolve it itself.
            loop.call_soon_threadsafe(_resolve, self.future)


async def _settled(future: asyncio.Future[None], timeout: float | None) -> None:
    # asyncio.wait neither raises on timeout nor cancels the future it watches.
    await asyncio.wait((future,), timeout=None if timeout is None else max(timeout, 0.0))


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class AsyncHandOffQueue(HandOffQueue[T]):
    """:class:`.HandOffQueue` whose ``get()`` suspends the calling coroutine, not the thread."""

    def _new_waiter(self) -> _Waiter[T]:
        return _FutureWaiter()

    def _wait(self, waiter: _Waiter[T], timeout: float | None) -> T:
        try:
            settled = waiter.sleep(timeout)
        except BaseException:
            # Cancelled, or no greenlet to await in: out of line, and nothing kept.
            with self._mutex:
                if not waiter.woken:
                    self._line.remove(waiter)
                    raise
            self._pass_on(waiter.item)
            raise
        if not settled:
            self._leave_unless_woken(waiter)
        return self._handed(waiter)

    def _pass_on(self, item: T | None) -> None:
        """What a waiter that gave up was handed: to the next in line, else idle.

        A connection goes back among the idle ones even when they already
        number ``maxsize`` (an overflow one handed over while another came
        back): the pool's accounting counts it as idle, and the next return
        that finds the idle ones full closes one of them.
        """
        with self._mutex:
            if self._line:
                self._line.popleft().hand(item)
            elif item is not None:
                self._idle.append(item)
