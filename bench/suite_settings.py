"""Django settings for ``bench.bench_suite``: ``bench/settings.py`` plus what requests need.

Two aliases name the same PostgreSQL database: ``default`` opens a new
connection per request (``CONN_MAX_AGE`` 0, Django's default), ``persistent``
keeps it (``CONN_MAX_AGE`` None). Pools: ``main`` (the documented defaults),
``four`` (4 connections, no overflow, for the threads comparison),
``guarded`` (whose breaker the benchmark opens), and the pools of
``bench/pool_rows.py``: ``contended`` (4 connections, no overflow, timeout
30 s) and ``starved`` (3 connections, no overflow, timeout 5 s), both without
pre-ping.

The middleware is the demo project's: Django's ``startproject`` stack with
``SessionMiddleware`` after authentication, so that a request costs what it
costs in a project. None of Django's middleware touches the database for the
views requested here.
"""

from __future__ import annotations

from bench.settings import *  # noqa: F403 - the same database, app and pool defaults
from bench.settings import DATABASES

DATABASES = {
    "default": {**DATABASES["default"], "CONN_MAX_AGE": 0},
    "persistent": {**DATABASES["default"], "CONN_MAX_AGE": None},
}

ALLOWED_HOSTS = ["127.0.0.1"]
ROOT_URLCONF = "bench.suite_urls"
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "mingus_sessions",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "mingus_sessions.middleware.SessionMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

MINGUS_SESSIONS = {
    "POOLS": {
        "main": {"DATABASE": "default", "POOL_SIZE": 5, "PRE_PING": True},
        "four": {"DATABASE": "default", "POOL_SIZE": 4, "MAX_OVERFLOW": 0, "PRE_PING": True},
        "guarded": {"DATABASE": "default", "POOL_SIZE": 1, "PRE_PING": True},
        "contended": {
            "DATABASE": "default",
            "POOL_SIZE": 4,
            "MAX_OVERFLOW": 0,
            "POOL_TIMEOUT": 30,
            "PRE_PING": False,
        },
        "starved": {
            "DATABASE": "default",
            "POOL_SIZE": 3,
            "MAX_OVERFLOW": 0,
            "POOL_TIMEOUT": 5,
            "PRE_PING": False,
        },
    },
    "DEFAULT_POOL": "main",
    "MONITORING": True,
    "LEAK_THRESHOLD": 30.0,
    "SLOW_QUERY_THRESHOLD": 1.0,
}
