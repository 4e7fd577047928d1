"""Settings for the test suite; ``MINGUS_TEST_DATABASE`` picks the server.

``sqlite`` (the default) uses Django's own in-memory test databases, so the
suite also proves that engines follow them; ``postgresql`` and ``mysql`` use
the usual ``PG*`` / ``MYSQL_*`` variables, defaulting to the local servers.
Two aliases, ``default`` and ``other``, exercise named pools.
"""

from __future__ import annotations

import os

SECRET_KEY = "tests-only-not-secret"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
ALLOWED_HOSTS = ["testserver", "127.0.0.1", "localhost"]

TEST_DATABASE = os.environ.get("MINGUS_TEST_DATABASE", "sqlite")
#: Prefix for server database names, so that concurrent runs never share one.
DB_PREFIX = os.environ.get("MINGUS_TEST_DB_PREFIX", "")

#: The database password the security tests look for everywhere.
PASSWORD_SENTINEL = "s3ntinel-Pa55word-never-shown"


def _postgresql(name: str) -> dict[str, object]:
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": DB_PREFIX + name,
        "USER": os.environ.get("PGUSER", "postgres"),
        "PASSWORD": os.environ.get("PGPASSWORD", ""),
        "HOST": os.environ.get("PGHOST", "127.0.0.1"),
        "PORT": os.environ.get("PGPORT", "5432"),
        "TEST": {"NAME": f"test_{DB_PREFIX}{name}"},
    }


def _mysql(name: str) -> dict[str, object]:
    return {
        "ENGINE": "django.db.backends.mysql",
        "NAME": DB_PREFIX + name,
        "USER": os.environ.get("MYSQL_USER", "root"),
        "PASSWORD": os.environ.get("MYSQL_PASSWORD", ""),
        "HOST": os.environ.get("MYSQL_HOST", "127.0.0.1"),
        "PORT": os.environ.get("MYSQL_PORT", "3306"),
        "OPTIONS": {"charset": "utf8mb4"},
        "TEST": {"NAME": f"test_{DB_PREFIX}{name}", "CHARSET": "utf8mb4"},
    }


if TEST_DATABASE == "postgresql":
    DATABASES = {"default": _postgresql("mingus"), "other": _postgresql("mingus_other")}
elif TEST_DATABASE == "mysql":
    DATABASES = {"default": _mysql("mingus"), "other": _mysql("mingus_other")}
elif TEST_DATABASE == "sqlite":
    DATABASES = {
        "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"},
        "other": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"},
    }
else:  # pragma: no cover - a typo in the environment
    raise RuntimeError(f"MINGUS_TEST_DATABASE={TEST_DATABASE!r}: use sqlite, postgresql or mysql.")

if os.environ.get("MINGUS_TEST_USE_TEST_NAMES") == "1":
    # A process the tests start (a Celery worker) uses the test databases that
    # pytest-django created, not the real ones.
    for _database in DATABASES.values():
        _test = _database.get("TEST")
        if isinstance(_test, dict) and _test.get("NAME"):
            _database["NAME"] = _test["NAME"]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.admin",
    "health_check",
    "mingus_sessions",
    "tests.testapp",
]
if TEST_DATABASE == "postgresql":
    # HStoreField and Django's hstore adapters on its connections.
    INSTALLED_APPS += ["django.contrib.postgres", "tests.pgapp"]

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "mingus_sessions.middleware.SessionMiddleware",
]

ROOT_URLCONF = "tests.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

MINGUS_SESSIONS = {
    "POOLS": {
        "main": {"DATABASE": "default", "POOL_SIZE": 5, "MAX_OVERFLOW": 5, "POOL_TIMEOUT": 10},
        "other": {"DATABASE": "other", "POOL_SIZE": 2, "MAX_OVERFLOW": 0, "POOL_TIMEOUT": 5},
    },
    "CIRCUIT_BREAKER": {"ENABLED": True, "FAILURE_THRESHOLD": 5, "RECOVERY_TIMEOUT": 60.0},
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "loggers": {"mingus_sessions": {"level": "DEBUG"}},
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

STATIC_URL = "/static/"
