"""Settings of the demo project, read from the environment.

``DATABASE_URL`` picks the database (``postgresql://``, ``mysql://`` or
``sqlite:///path``, a path relative to the working directory, or
``sqlite:////absolute/path``); without it the demo uses ``demo.sqlite3`` in
``DEMO_VAR_DIR`` (default: ``var/`` in the repository). ``CELERY_BROKER_URL``
picks the Celery broker (``redis://...``, ``amqp://...``); without it the demo
uses a broker that needs no server: kombu's SQLAlchemy transport on
``celery-broker.sqlite3`` in ``DEMO_VAR_DIR``. ``CELERY_TASK_DEFAULT_QUEUE``
names the queue (default ``celery``). ``DEMO_CACHE_URL`` (``redis://host:port/db``)
puts the default cache, and with it the fleet view of the pools, on Redis, under
``DEMO_CACHE_KEY_PREFIX``; without it the cache is a folder of files in
``DEMO_VAR_DIR`` (``cache/``), which the web process and the Celery worker share.
``DEMO_HOST`` (``make demo DEMO_HOST=0.0.0.0:8080``) is added to ``ALLOWED_HOSTS``.
``DEMO_BREAKER_RECOVERY_TIMEOUT`` (seconds, default 60) is how long the circuit
breaker fails fast once a database is down. ``DJANGO_SECRET_KEY``
and ``DJANGO_DEBUG`` do what they say. These settings are for the demo only:
nothing here is hardened for production.
"""

from __future__ import annotations

import copy
import importlib.util
import os
from pathlib import Path
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from project.preflight import DEFAULT_HOST, PreflightError, parse_demo_host

BASE_DIR = Path(__file__).resolve().parent.parent
#: Where the demo keeps its files: the SQLite database (without DATABASE_URL), the
#: server-less Celery broker, the worker's log (scripts/demo.sh).
VAR_DIR = Path(os.environ.get("DEMO_VAR_DIR") or BASE_DIR / "var").resolve()

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _env_bool(name: str, default: bool) -> bool:
    """Read a yes/no environment variable; anything unrecognised is an error, not a guess."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean: use 1/0, true/false, yes/no.")


DEBUG = _env_bool("DJANGO_DEBUG", True)

#: Publicly known, so only acceptable while DEBUG is on (refused below otherwise).
DEMO_ONLY_SECRET_KEY = "demo-only-insecure-secret-key-do-not-use-in-production"
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY") or DEMO_ONLY_SECRET_KEY
if not DEBUG and SECRET_KEY == DEMO_ONLY_SECRET_KEY:
    raise ImproperlyConfigured("Set DJANGO_SECRET_KEY when DJANGO_DEBUG is off.")

ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]
# The host `make demo DEMO_HOST=...` serves on; on every interface (0.0.0.0), any
# name this machine is reached by (a demo only: never in production).
try:
    _demo_host = parse_demo_host(os.environ.get("DEMO_HOST") or DEFAULT_HOST)[0]
except PreflightError:
    _demo_host = "127.0.0.1"  # project.preflight reports it before the demo starts
if _demo_host in {"0.0.0.0", "::", "0"}:
    ALLOWED_HOSTS = ["*"]
elif _demo_host not in ALLOWED_HOSTS:
    ALLOWED_HOSTS.append(f"[{_demo_host}]" if ":" in _demo_host else _demo_host)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "health_check",
    "mingus_sessions",
    "project.communications",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # request.db_session: commits when the response is below 400, rolls back otherwise.
    "mingus_sessions.middleware.SessionMiddleware",
    # A database outage anywhere in a view is a 503 page, not a 500 (after the
    # line above, so that the request's session sees the 503 and rolls back).
    "project.communications.middleware.DatabaseOutageMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "project.urls"
WSGI_APPLICATION = "project.wsgi.application"
ASGI_APPLICATION = "project.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]


# --- Databases -------------------------------------------------------------

_BACKENDS = {
    "postgresql": "django.db.backends.postgresql",
    "postgres": "django.db.backends.postgresql",
    "mysql": "django.db.backends.mysql",
    "sqlite": "django.db.backends.sqlite3",
}

# Several connections (Django's own and each SQLAlchemy pool) share one SQLite
# file: WAL lets readers run next to the writer, the timeout makes a writer wait
# for the lock instead of failing at once, and IMMEDIATE takes the write lock at
# BEGIN so that two writers never deadlock upgrading a read lock. Django turns
# foreign keys on for its own connections; init_command carries the pragma to
# the SQLAlchemy pools too, which do not turn it on by themselves.
_SQLITE_OPTIONS: dict[str, Any] = {
    "timeout": 20,
    "init_command": "PRAGMA foreign_keys=ON; PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL",
    "transaction_mode": "IMMEDIATE",
}


def _sqlite(path: str | Path) -> dict[str, Any]:
    return {
        "ENGINE": _BACKENDS["sqlite"],
        "NAME": str(path),
        "OPTIONS": dict(_SQLITE_OPTIONS),
    }


def database_from_url(url: str) -> dict[str, Any]:
    """Turn a ``DATABASE_URL`` into a ``DATABASES`` entry (query parameters become OPTIONS)."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        # Never echo the URL: it may carry a password.
        raise ImproperlyConfigured("DATABASE_URL is not a valid database URL.") from exc
    backend = parsed.get_backend_name()
    if backend not in _BACKENDS:
        raise ImproperlyConfigured(
            f"DATABASE_URL uses {backend!r}; use postgresql://, mysql:// or sqlite:///path."
        )
    if backend == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            # Each process (and each command) would get its own empty database.
            raise ImproperlyConfigured("DATABASE_URL must name an SQLite file: sqlite:///path.")
        return _sqlite(parsed.database)
    options: dict[str, Any] = {
        key: value if isinstance(value, str) else value[-1] for key, value in parsed.query.items()
    }
    return {
        "ENGINE": _BACKENDS[backend],
        "NAME": parsed.database or "",
        "USER": parsed.username or "",
        "PASSWORD": parsed.password or "",
        "HOST": parsed.host or "",
        "PORT": str(parsed.port or ""),
        "OPTIONS": options,
    }


if os.environ.get("DATABASE_URL"):
    _default = database_from_url(os.environ["DATABASE_URL"])
else:
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    _default = _sqlite(VAR_DIR / "demo.sqlite3")

# "replica" is the same database under a second alias: the read-only analytics
# pool runs on it, as it would on a real replica. MIRROR makes the test runner
# point it at the test database instead of creating a second one.
_replica = copy.deepcopy(_default)
_replica["TEST"] = {"MIRROR": "default"}
# Readers must not take SQLite's write lock at BEGIN.
_replica["OPTIONS"].pop("transaction_mode", None)

DATABASES = {"default": _default, "replica": _replica}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"


# --- Cache (the fleet view publishes here) ----------------------------------

if os.environ.get("DEMO_CACHE_URL"):
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": os.environ["DEMO_CACHE_URL"],
            "KEY_PREFIX": os.environ.get("DEMO_CACHE_KEY_PREFIX", "mingus_demo"),
        }
    }
else:
    # The demo runs a web server and a Celery worker: the fleet cache must be one
    # they share and must need no server, so a folder of files (a process-local
    # cache would hide the worker, and the fleet check warns about it).
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(VAR_DIR / "cache"),
        }
    }


# --- mingus_sessions ---------------------------------------------------------

MINGUS_SESSIONS = {
    "DEFAULT_POOL": "main",
    "CELERY_POOL": "celery",
    "POOLS": {
        "main": {"DATABASE": "default", "POOL_SIZE": 10, "MAX_OVERFLOW": 10},
        # The worker's pool (CELERY_POOL). Each prefork child has a pool of its own
        # and runs one task at a time: two connections per child are plenty.
        "celery": {"DATABASE": "default", "POOL_SIZE": 2, "MAX_OVERFLOW": 2},
        "analytics": {
            "DATABASE": "replica",
            "POOL_SIZE": 3,
            "MAX_OVERFLOW": 2,
            "POOL_TIMEOUT": 60,
            "READ_ONLY": True,
        },
    },
    # The demo's default; the load test (scripts/load_test.sh) shortens it so the
    # pools try the database again seconds after a restart, not a minute.
    "CIRCUIT_BREAKER": {
        "RECOVERY_TIMEOUT": float(os.environ.get("DEMO_BREAKER_RECOVERY_TIMEOUT") or 60.0)
    },
    # Bearer token for /metrics/database and friends (staff users need none).
    "METRICS_TOKEN": os.environ.get("MINGUS_METRICS_TOKEN") or None,
}


# --- Celery (project/celery.py reads the CELERY_* settings) -------------------------

if os.environ.get("CELERY_BROKER_URL"):
    CELERY_BROKER_URL = os.environ["CELERY_BROKER_URL"]
else:
    # A broker that needs no server: kombu's SQLAlchemy transport keeps the
    # queue in an SQLite file of its own (not the demo's database). Workers poll
    # it once a second. Fine for a demo; use Redis or RabbitMQ in production.
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_URL = f"sqla+sqlite:///{VAR_DIR / 'celery-broker.sqlite3'}"
    # Passed to create_engine(): wait for the file's lock instead of failing.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"connect_args": {"timeout": 30}}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_DEFAULT_QUEUE = os.environ.get("CELERY_TASK_DEFAULT_QUEUE") or "celery"
# No result backend: the tasks' effects are rows in the database.
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
# Acknowledge a message after the task ran, and give it back to the broker if the
# worker process dies mid-task: delivery is at least once, so the tasks are
# idempotent (an idempotency key on each communication).
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# SoftTimeLimitExceeded is raised in the task at 30 s (its transaction rolls
# back); the process is killed at 60 s. Enforced by the prefork pool, not solo.
CELERY_TASK_SOFT_TIME_LIMIT = 30
CELERY_TASK_TIME_LIMIT = 60
CELERY_TIMEZONE = "UTC"


# --- The rest ------------------------------------------------------------------

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "simple": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "simple"},
    },
    "loggers": {
        "mingus_sessions": {"handlers": ["console"], "level": "INFO", "propagate": False},
    },
}


# --- django-debug-toolbar (with DEBUG on, when it is installed) ------------------
# The toolbar with mingus_sessions' SQLAlchemy panel next to Django's SQL panel
# (docs/web.md, "The debug-toolbar panel"); installed by the debug-toolbar extra.

DEBUG_TOOLBAR = DEBUG and importlib.util.find_spec("debug_toolbar") is not None
if DEBUG_TOOLBAR:
    INSTALLED_APPS += ["debug_toolbar"]
    # First, so that its panels see every other middleware's work (the request
    # scope's commit or rollback included).
    MIDDLEWARE = ["debug_toolbar.middleware.DebugToolbarMiddleware", *MIDDLEWARE]
    INTERNAL_IPS = ["127.0.0.1", "::1"]
    DEBUG_TOOLBAR_PANELS = [
        "debug_toolbar.panels.history.HistoryPanel",
        "debug_toolbar.panels.versions.VersionsPanel",
        "debug_toolbar.panels.timer.TimerPanel",
        "debug_toolbar.panels.settings.SettingsPanel",
        "debug_toolbar.panels.headers.HeadersPanel",
        "debug_toolbar.panels.request.RequestPanel",
        "debug_toolbar.panels.sql.SQLPanel",
        "mingus_sessions.debug_toolbar.SQLAlchemyPanel",
        "debug_toolbar.panels.staticfiles.StaticFilesPanel",
        "debug_toolbar.panels.templates.TemplatesPanel",
        "debug_toolbar.panels.cache.CachePanel",
        "debug_toolbar.panels.signals.SignalsPanel",
    ]
