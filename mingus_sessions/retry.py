"""``execute_with_retry`` and ``retry_on_transient``, with the ``RETRY`` settings as defaults.

Wrap a whole transaction (a ``session_scope`` inside the operation), never a
statement inside one: after a deadlock or a disconnect the transaction is gone.
The policy itself is :mod:`mingus_sessions._core.retry`.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar, overload

from . import conf
from ._core.retry import acall_with_retry, call_with_retry

__all__ = ["aexecute_with_retry", "execute_with_retry", "retry_on_transient"]

T = TypeVar("T")
P = ParamSpec("P")


def execute_with_retry(
    operation: Callable[[], T],
    *,
    pool: str | None = None,
    max_retries: int | None = None,
    base_delay: float | None = None,
    max_delay: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call ``operation()``, retrying transient failures; ``RETRY`` gives the defaults.

    Raises the last failure once ``max_retries`` retries are spent, and any
    non-transient failure at once.
    """
    return call_with_retry(
        operation, **_policy(max_retries, base_delay, max_delay), pool=pool, sleep=sleep
    )


async def aexecute_with_retry(
    operation: Callable[[], Awaitable[T]],
    *,
    pool: str | None = None,
    max_retries: int | None = None,
    base_delay: float | None = None,
    max_delay: float | None = None,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
) -> T:
    """Await ``operation()``, retrying transient failures as :func:`execute_with_retry` does.

    ``operation`` is a coroutine function called anew for each attempt: wrap
    a whole ``asession_scope`` in it, never a statement inside one.
    """
    return await acall_with_retry(
        operation, **_policy(max_retries, base_delay, max_delay), pool=pool, sleep=sleep
    )


def _policy(
    max_retries: int | None, base_delay: float | None, max_delay: float | None
) -> dict[str, Any]:
    """The retry policy: the arguments given, ``RETRY``'s values for the others."""
    settings = conf.get_config().retry
    return {
        "retries": settings.max_retries if max_retries is None else max_retries,
        "base_delay": settings.base_delay if base_delay is None else base_delay,
        "max_delay": settings.max_delay if max_delay is None else max_delay,
        "jitter": settings.jitter,
    }


@overload
def retry_on_transient(func: Callable[P, T], /) -> Callable[P, T]: ...


@overload
def retry_on_transient(
    *,
    pool: str | None = None,
    max_retries: int | None = None,
    base_delay: float | None = None,
    max_delay: float | None = None,
) -> Callable[[Callable[P, T]], Callable[P, T]]: ...


def retry_on_transient(
    func: Callable[P, T] | None = None,
    /,
    *,
    pool: str | None = None,
    max_retries: int | None = None,
    base_delay: float | None = None,
    max_delay: float | None = None,
) -> Callable[P, T] | Callable[[Callable[P, T]], Callable[P, T]]:
    """Decorator form of :func:`execute_with_retry`, with or without arguments."""

    def decorate(fn: Callable[P, T]) -> Callable[P, T]:
        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            return execute_with_retry(
                lambda: fn(*args, **kwargs),
                pool=pool,
                max_retries=max_retries,
                base_delay=base_delay,
                max_delay=max_delay,
            )

        return wrapper

    if func is not None:
        return decorate(func)
    return decorate
