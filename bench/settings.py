"""Minimal Django settings for ``bench/``: one PostgreSQL database, the app, nothing else.

The database comes from the libpq variables (``PGHOST``, ``PGPORT``, ``PGUSER``,
``PGPASSWORD``) and ``MINGUS_BENCH_DB`` (set by ``bench_metrics`` to the database
it created, or given by you to reuse an existing one).
"""

from __future__ import annotations

import os

SECRET_KEY = "bench-only-not-secret"
DEBUG = False
USE_TZ = True
INSTALLED_APPS = ["mingus_sessions"]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.get("MINGUS_BENCH_DB", "mingus_bench"),
        "USER": os.environ.get("PGUSER", "postgres"),
        "PASSWORD": os.environ.get("PGPASSWORD", ""),
        "HOST": os.environ.get("PGHOST", "127.0.0.1"),
        "PORT": os.environ.get("PGPORT", "5432"),
    }
}

# The documented defaults, spelled out: one queue pool of 5 (max overflow 10),
# PRE_PING on, LEAK_THRESHOLD 30 s, SLOW_QUERY_THRESHOLD 1 s. The benchmark
# flips MONITORING between rounds.
MINGUS_SESSIONS = {
    "POOLS": {"main": {"DATABASE": "default", "POOL_SIZE": 5, "PRE_PING": True}},
    "MONITORING": True,
    "LEAK_THRESHOLD": 30.0,
    "SLOW_QUERY_THRESHOLD": 1.0,
}

LOGGING_CONFIG = None
