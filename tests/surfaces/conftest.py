"""The surfaces' fixtures."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.core.cache import caches

from mingus_sessions import monitor
from mingus_sessions.metrics import stop_monitoring
from tests.helpers import closed_port
from tests.surfaces.helpers import configure


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


@pytest.fixture
def fleet_cache(settings: Any) -> Iterator[Any]:
    """FLEET on a local-memory cache of this test's own, 60 s interval (nothing ticks by itself).

    Processes are published to it by hand (``tests.surfaces.helpers.publish``) or by a
    sampler the test starts; other tests' entries never show.
    """
    alias = f"fleet-{uuid.uuid4().hex}"
    settings.CACHES = {
        **django_settings.CACHES,
        alias: {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": alias},
    }
    configure(settings, FLEET={"CACHE": alias, "INTERVAL": 60})
    cache = caches[alias]
    yield cache
    stop_monitoring()
    cache.clear()


@pytest.fixture
def unreachable_fleet(settings: Any) -> None:
    """FLEET on a Redis cache nobody listens for."""
    settings.CACHES = {
        **django_settings.CACHES,
        "down": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{closed_port()}/0",
        },
    }
    configure(settings, FLEET={"CACHE": "down", "INTERVAL": 60})
