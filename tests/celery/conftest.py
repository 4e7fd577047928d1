"""The in-process tests' fixtures: a clean queue and clean records, and a spy on retries."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from mingus_sessions._core.state import state
from tests.celery.inprocess import (
    ACTIONS,
    CALLS,
    always_deadlocks,
    published,
    publishes,
    publishes_first,
    scripted,
    task,
)


@pytest.fixture
def _clean() -> Iterator[None]:
    """No queued message, scripted action or call record before the test, and none after it."""
    ACTIONS.clear()
    CALLS.clear()
    state.transactions.reset()
    published()
    yield
    ACTIONS.clear()
    CALLS.clear()
    published()


@pytest.fixture
def retry_spy(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Records each Task.retry() call's keyword arguments and get_retry_delay's answers."""
    from mingus_sessions import celery as celery_module

    calls: list[dict[str, Any]] = []
    real_delay = celery_module.get_retry_delay

    def spy_delay(exc: BaseException, attempt: int) -> float:
        delay = real_delay(exc, attempt)
        calls.append({"attempt": attempt, "delay": delay, "exc": exc})
        return delay

    monkeypatch.setattr(celery_module, "get_retry_delay", spy_delay)
    for fn in (scripted, always_deadlocks, publishes, publishes_first):
        cls = type(task(fn))
        real_retry = cls.retry

        def spy_retry(self: Any, *args: Any, _real: Any = real_retry, **kwargs: Any) -> Any:
            calls[-1]["countdown"] = kwargs.get("countdown")
            calls[-1]["max_retries"] = kwargs.get("max_retries")
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(cls, "retry", spy_retry)
    return calls
