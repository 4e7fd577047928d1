"""Retry transient failures with exponential backoff, a cap and full jitter.

Plain Python. The operation is called again only when
:func:`~mingus_sessions.translate.is_transient` says the failure may pass;
data errors and authentication failures are raised at once. Wrap a whole
transaction (a ``session_scope`` inside the operation), never a statement inside
one: after a deadlock or a disconnect the transaction is gone.
"""

from __future__ import annotations

import functools
import logging
import random
import time
from collections.abc import Callable
from typing import ParamSpec, TypeVar, overload

from .config import MAX_SECONDS
from .stats import session_stats
from .translate import is_transient

__all__ = ["backoff_delay", "execute_with_retry", "retry_on_transient"]

logger = logging.getLogger("mingus_sessions")

T = TypeVar("T")
P = ParamSpec("P")


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


def _retry_settings() -> tuple[int, float, float, bool]:
    from .conf import get_config

    retry = get_config().retry
    return retry.max_retries, retry.base_delay, retry.max_delay, retry.jitter


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
    default_retries, default_base, default_max, jitter = _retry_settings()
    retries = default_retries if max_retries is None else max_retries
    base = default_base if base_delay is None else base_delay
    cap = default_max if max_delay is None else max_delay
    if retries < 0:
        raise ValueError("max_retries must be 0 or more")
    for name, value in (("base_delay", base), ("max_delay", cap)):
        # Checked before the first call: a delay the clock cannot sleep would
        # otherwise raise OverflowError in place of the failure being retried.
        if not 0 <= value <= MAX_SECONDS:
            raise ValueError(
                f"{name} must be a number of seconds from 0 to {MAX_SECONDS}, not {value!r}"
            )
    attempt = 0
    while True:
        try:
            return operation()
        except Exception as exc:
            if attempt >= retries or not is_transient(exc):
                raise
            delay = backoff_delay(attempt, base_delay=base, max_delay=cap, jitter=jitter)
            logger.warning(
                "Transient database failure on pool %s (retry %d of %d in %.3f s): %s",
                pool or "(default)",
                attempt + 1,
                retries,
                delay,
                type(exc).__name__,
            )
            session_stats.retries += 1
            sleep(delay)
            attempt += 1


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
