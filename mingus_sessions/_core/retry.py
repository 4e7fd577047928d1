"""The retry policy: exponential backoff, a cap and full jitter, for transient failures.

Plain Python. The operation is called again only when
:func:`~mingus_sessions._core.translate.is_transient` says the failure may
pass; data errors and authentication failures are raised at once. The
settings' defaults are applied by :mod:`mingus_sessions.retry`.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from .config import MAX_SECONDS
from .state import state
from .translate import is_transient

__all__ = ["acall_with_retry", "backoff_delay", "call_with_retry", "check_policy", "retry_delay"]

logger = logging.getLogger("mingus_sessions")

T = TypeVar("T")


def backoff_delay(
    attempt: int,
    *,
    base_delay: float,
    max_delay: float,
    jitter: bool,
    rng: Callable[[float, float], float] = random.uniform,
) -> float:
    """Seconds to wait before retry number ``attempt`` (0 for the first retry).

    Exponential (``base_delay * 2**attempt``) and capped at ``max_delay``; with
    ``jitter``, a uniform draw between 0 and that ("full jitter"), so that many
    clients failing together do not come back together.
    """
    ceiling = min(max_delay, base_delay * (2 ** min(attempt, 62)))
    return rng(0.0, ceiling) if jitter else ceiling


def call_with_retry(
    operation: Callable[[], T],
    *,
    retries: int,
    base_delay: float,
    max_delay: float,
    jitter: bool,
    pool: str | None,
    sleep: Callable[[float], None],
) -> T:
    """Call ``operation()``, retrying transient failures up to ``retries`` times.

    Raises the last failure once the retries are spent, and any non-transient
    failure at once.
    """
    check_policy(retries, base_delay, max_delay)
    attempt = 0
    while True:
        try:
            return operation()
        except Exception as exc:
            delay = retry_delay(exc, attempt, retries, base_delay, max_delay, jitter, pool)
            if delay is None:
                raise
        sleep(delay)
        attempt += 1


async def acall_with_retry(
    operation: Callable[[], Awaitable[T]],
    *,
    retries: int,
    base_delay: float,
    max_delay: float,
    jitter: bool,
    pool: str | None,
    sleep: Callable[[float], Awaitable[Any]],
) -> T:
    """:func:`call_with_retry` for a coroutine function: awaits it, and sleeps without blocking."""
    check_policy(retries, base_delay, max_delay)
    attempt = 0
    while True:
        try:
            return await operation()
        except Exception as exc:
            delay = retry_delay(exc, attempt, retries, base_delay, max_delay, jitter, pool)
            if delay is None:
                raise
        await sleep(delay)
        attempt += 1


def check_policy(retries: int, base_delay: float, max_delay: float) -> None:
    """Refuse a policy before the first call.

    A delay the clock cannot sleep would otherwise raise ``OverflowError`` in
    place of the failure being retried.
    """
    if retries < 0:
        raise ValueError("max_retries must be 0 or more")
    for name, value in (("base_delay", base_delay), ("max_delay", max_delay)):
        if not 0 <= value <= MAX_SECONDS:
            raise ValueError(
                f"{name} must be a number of seconds from 0 to {MAX_SECONDS}, not {value!r}"
            )


def retry_delay(
    exc: Exception,
    attempt: int,
    retries: int,
    base_delay: float,
    max_delay: float,
    jitter: bool,
    pool: str | None,
) -> float | None:
    """Seconds to wait before retrying after ``exc``, counted and logged; None: raise it."""
    if attempt >= retries or not is_transient(exc):
        return None
    delay = backoff_delay(attempt, base_delay=base_delay, max_delay=max_delay, jitter=jitter)
    logger.warning(
        "Transient database failure on pool %s (retry %d of %d in %.3f s): %s",
        pool or "(default)",
        attempt + 1,
        retries,
        delay,
        type(exc).__name__,
    )
    state.sessions.retries += 1
    return delay
