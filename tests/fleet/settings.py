"""The test settings with the fleet on a Redis cache: for the processes tests/fleet starts.

``MINGUS_FLEET_REDIS_URL`` and ``MINGUS_FLEET_KEY_PREFIX`` name the cache (a key
prefix of the run's own, so parallel runs never mix), ``MINGUS_FLEET_INTERVAL``
the sample interval, ``MINGUS_FLEET_TOKEN`` the metrics token. The databases are
the test databases pytest-django created (``MINGUS_TEST_USE_TEST_NAMES=1``).
"""

from __future__ import annotations

import copy
import os

from tests.settings import *  # noqa: F403 - these settings, plus the fleet's
from tests.settings import CACHES as _CACHES
from tests.settings import MINGUS_SESSIONS as _MINGUS_SESSIONS

CACHES = {
    **_CACHES,
    "fleet": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": os.environ.get("MINGUS_FLEET_REDIS_URL", "redis://127.0.0.1:6379/7"),
        "KEY_PREFIX": os.environ.get("MINGUS_FLEET_KEY_PREFIX", "mingus-fleet"),
    },
}

MINGUS_SESSIONS = copy.deepcopy(_MINGUS_SESSIONS)
MINGUS_SESSIONS["FLEET"] = {
    "CACHE": "fleet",
    "INTERVAL": float(os.environ.get("MINGUS_FLEET_INTERVAL", "0.5")),
}
MINGUS_SESSIONS["METRICS_TOKEN"] = os.environ.get("MINGUS_FLEET_TOKEN") or None
