"""The retry policy: exponential backoff, a cap and full jitter, for transient failures.

Plain Python. The operation is called again only when
:func:`~mingus_sessions._core.translate.is_transient` says the failure may
pass; data errors and authentication failures are raised at once. The
settings' defaults are applied by :mod:`mingus_sessions.retry`.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import TypeVar

from .config import MAX_SECONDS
from .state import state
from .translate import is_transient

__all__ = ["backoff_delay", "call_with_retry"]

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
    failure at once. The arguments are checked before the first call: a delay
    the clock cannot sleep would otherwise raise OverflowError in place of the
    failure being retried.
    """
    if retries < 0:
        raise ValueError("max_retries must be 0 or more")
    for name, value in (("base_delay", base_delay), ("max_delay", max_delay)):
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
            delay = backoff_delay(
                attempt, base_delay=base_delay, max_delay=max_delay, jitter=jitter
            )
            logger.warning(
                "Transient database failure on pool %s (retry %d of %d in %.3f s): %s",
                pool or "(default)",
                attempt + 1,
                retries,
                delay,
                type(exc).__name__,
            )
            state.sessions.retries += 1
            sleep(delay)
            attempt += 1
