"""The surfaces' fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mingus_sessions import monitor
from mingus_sessions.metrics import stop_monitoring


@pytest.fixture
def no_sampler() -> Iterator[None]:
    """No sampler before the test (an earlier request may have started one), none after.

    A sampler left running would read and publish the pools under test
    concurrently, and publish a fleet entry that ``advise_pools()`` reads in
    place of this process's live metrics.
    """
    stop_monitoring()
    yield
    stop_monitoring()
    assert not monitor.is_monitoring()
