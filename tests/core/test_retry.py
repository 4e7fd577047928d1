"""The retry policy of the core: exponential backoff with a cap and full jitter, the last failure
raised once the retries are spent, and delays checked before the first call.

Plain Python over :mod:`mingus_sessions._core.retry`; ``execute_with_retry`` and
``retry_on_transient``, which give it the ``RETRY`` settings as defaults, are
tested around real scopes in ``tests/scopes/test_retry.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

from mingus_sessions._core.config import RetryConfig
from mingus_sessions._core.errors import DeadlockError
from mingus_sessions._core.retry import backoff_delay, call_with_retry
from mingus_sessions._core.state import state

T = TypeVar("T")


def _call(operation: Callable[[], T], **given: Any) -> T:
    """``call_with_retry`` with RETRY's defaults for what ``given`` leaves out.

    The defaults execute_with_retry hands it when the settings say nothing.
    """
    defaults = RetryConfig()
    arguments: dict[str, Any] = {
        "retries": defaults.max_retries,
        "base_delay": defaults.base_delay,
        "max_delay": defaults.max_delay,
        "jitter": defaults.jitter,
        "pool": None,
        "sleep": time.sleep,
    }
    arguments.update(given)
    return call_with_retry(operation, **arguments)


def test_backoff_delay_exponential_capped_and_jittered() -> None:
    """backoff_delay doubles per attempt, stops at max_delay, and jitter stays in [0, ceiling]."""
    plain = [backoff_delay(n, base_delay=0.1, max_delay=1.0, jitter=False) for n in range(6)]
    assert plain == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    assert backoff_delay(500, base_delay=0.1, max_delay=30.0, jitter=False) == 30.0

    asked: list[tuple[float, float]] = []

    def rng(low: float, high: float) -> float:
        asked.append((low, high))
        return high / 2

    assert backoff_delay(3, base_delay=0.1, max_delay=30.0, jitter=True, rng=rng) == (
        pytest.approx(0.4)
    )
    assert asked == [(0.0, pytest.approx(0.8))]

    for attempt in range(10):
        ceiling = min(2.0, 0.1 * 2**attempt)
        draws = [
            backoff_delay(attempt, base_delay=0.1, max_delay=2.0, jitter=True) for _ in range(200)
        ]
        assert all(0.0 <= d <= ceiling for d in draws)
        assert len(set(draws)) > 1  # really random


def test_retry_raises_last_error_after_max_retries() -> None:
    """After max_retries retries the last transient error itself is raised."""
    raised: list[DeadlockError] = []
    retries_before = state.sessions.retries  # the core's tests reset no counter

    def operation() -> None:
        error = DeadlockError(f"attempt {len(raised) + 1}")
        raised.append(error)
        raise error

    with pytest.raises(DeadlockError) as info:
        _call(operation, retries=2, base_delay=0.001, sleep=lambda _: None)
    assert len(raised) == 3
    assert info.value is raised[-1]
    assert state.sessions.retries - retries_before == 2


@pytest.mark.parametrize(
    ("keyword", "value"),
    [("base_delay", 1e12), ("max_delay", 1e12), ("base_delay", -1), ("max_delay", float("nan"))],
)
def test_call_with_retry_refuses_a_delay_the_clock_cannot_sleep(keyword: str, value: float) -> None:
    """A delay argument out of range is refused before the first call, naming the argument,
    instead of an OverflowError replacing the failure being retried."""
    calls: list[int] = []
    with pytest.raises(ValueError, match=f"^{keyword} must be a number of seconds from 0 to 86400"):
        _call(lambda: calls.append(1), **{keyword: value})
    assert calls == []
