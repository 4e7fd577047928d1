"""Async pools in the metrics: checkouts, acquire wait and hold, the pool's gauges, leak reports
with the site that opened the scope, slow queries, and the breaker."""

from __future__ import annotations

import asyncio
import copy
import logging
from typing import Any

import pytest
from django.conf import settings as django_settings
from sqlalchemy import text

from mingus_sessions import CircuitOpenError, asession_scope, get_async_engine
from mingus_sessions._core.state import state
from mingus_sessions.breakers import get_circuit_breaker
from mingus_sessions.metrics import get_pool_metrics
from tests.scopes.helpers import db

pytestmark = [pytest.mark.asyncio, db]


def configure(settings: Any, **top: Any) -> None:
    config = copy.deepcopy(django_settings.MINGUS_SESSIONS)
    config.update(top)
    settings.MINGUS_SESSIONS = config


async def test_checkouts_waits_holds_and_gauges_count_async_connections() -> None:
    before = get_pool_metrics("main")
    async with asession_scope() as session:
        await session.execute(text("SELECT 1"))
        held = get_pool_metrics("main")
        assert held.checked_out == before.checked_out + 1
        assert held.capacity == 2 * before.capacity  # the sync engine's and this loop's
        await asyncio.sleep(0.05)
    after = get_pool_metrics("main")
    assert after.checked_out == 0
    assert after.checkouts == before.checkouts + 1
    assert after.hold_ms.count == before.hold_ms.count + 1
    # A 50 ms hold shows as about that (buckets are within 6.25%).
    assert 45 <= after.hold_ms.max <= 80
    assert after.acquire_wait_ms.count == before.acquire_wait_ms.count + 1


async def test_a_leaked_async_connection_is_reported_with_the_scope_that_opened_it(
    settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    configure(settings, LEAK_THRESHOLD=0.05)
    async with asession_scope() as session:
        await session.execute(text("SELECT 1"))
        await asyncio.sleep(0.1)
        recorder: Any = state.pools["main"].probe
        with caplog.at_level(logging.WARNING, logger="mingus_sessions.leaks"):
            assert recorder.scan_leaks() == 1
    report = "\n".join(record.getMessage() for record in caplog.records)
    assert "held for" in report
    assert "test_a_leaked_async_connection_is_reported_with_the_scope_that_opened_it" in report
    assert get_pool_metrics("main").leaks == 1


async def test_slow_async_statements_are_logged(settings: Any) -> None:
    configure(settings, SLOW_QUERY_THRESHOLD=0.000001)
    async with asession_scope() as session:
        await session.execute(text("SELECT 42"))
    recorder: Any = state.pools["main"].probe
    assert any("SELECT 42" in slow.statement for slow in recorder.slowest())
    assert get_pool_metrics("main").slow_queries >= 1


async def test_an_open_breaker_fails_async_scopes_fast_without_connecting() -> None:
    get_async_engine()
    breaker = get_circuit_breaker("main")
    for _ in range(breaker.failure_threshold):
        breaker.record_failure()
    assert breaker.state == "open"
    connects = get_pool_metrics("main").connects
    with pytest.raises(CircuitOpenError):
        async with asession_scope():
            raise AssertionError("never entered")
    assert get_pool_metrics("main").connects == connects
