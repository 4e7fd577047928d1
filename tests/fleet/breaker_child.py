"""One process of a fleet whose pool "main" has a shared circuit breaker, driven over stdin.

``python -m tests.fleet.breaker_child``, configured by the environment:
``BREAKER_DB_PORT`` (the PostgreSQL port of 127.0.0.1 its pool connects to),
``BREAKER_THRESHOLD`` and ``BREAKER_RECOVERY`` (its ``CIRCUIT_BREAKER``),
``MINGUS_FLEET_REDIS_URL`` and ``MINGUS_FLEET_KEY_PREFIX`` (the FLEET cache).
For each line ``call`` it runs one scope (``SELECT 1``) and answers one JSON line:
``{"result": "ok" | "open" | "failed", "state": <its breaker's state>}``.
"""

from __future__ import annotations

import json
import os
import sys


def configure() -> None:
    import django
    from django.conf import settings

    settings.configure(
        SECRET_KEY="tests-only-not-secret",
        USE_TZ=True,
        INSTALLED_APPS=["mingus_sessions"],
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.postgresql",
                "NAME": "postgres",
                "USER": os.environ.get("PGUSER", "postgres"),
                "PASSWORD": os.environ.get("PGPASSWORD", ""),
                "HOST": "127.0.0.1",
                "PORT": os.environ["BREAKER_DB_PORT"],
            }
        },
        CACHES={
            "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
            "fleet": {
                "BACKEND": "django.core.cache.backends.redis.RedisCache",
                "LOCATION": os.environ["MINGUS_FLEET_REDIS_URL"],
                "KEY_PREFIX": os.environ["MINGUS_FLEET_KEY_PREFIX"],
            },
        },
        MINGUS_SESSIONS={
            "POOLS": {"main": {"DATABASE": "default", "POOL_SIZE": 1, "POOL_TIMEOUT": 5}},
            "MONITORING": False,
            "CIRCUIT_BREAKER": {
                "FAILURE_THRESHOLD": int(os.environ["BREAKER_THRESHOLD"]),
                "RECOVERY_TIMEOUT": float(os.environ["BREAKER_RECOVERY"]),
                "SHARED": True,
            },
            "FLEET": {"CACHE": "fleet"},
        },
    )
    django.setup()


def main() -> None:
    configure()
    from sqlalchemy import text

    from mingus_sessions import (
        CircuitOpenError,
        DatabaseConnectionError,
        get_circuit_breaker,
        session_scope,
    )

    print(json.dumps({"ready": os.getpid()}), flush=True)
    for line in sys.stdin:
        if line.strip() != "call":
            break
        try:
            with session_scope() as session:
                session.execute(text("SELECT 1"))
            result = "ok"
        except CircuitOpenError:
            result = "open"
        except DatabaseConnectionError:
            result = "failed"
        print(json.dumps({"result": result, "state": get_circuit_breaker().state}), flush=True)


if __name__ == "__main__":
    main()
