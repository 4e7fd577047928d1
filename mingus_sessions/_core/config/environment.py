"""The environment variables that override settings: their names and their parsing.

The seeds' deployments tune pools through variables such as ``DB_POOL_SIZE``;
a variable wins over the value in ``MINGUS_SESSIONS``, and a malformed one is
reported (E010) rather than ignored.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from .readers import _Collector
from .schema import MAX_SECONDS

# Environment variables per pool, as the seeds named them: ``DB_POOL_SIZE`` for
# the pool ``main``, ``CELERY_DB_POOL_SIZE`` for the pool ``celery``.
_ENV_POOL_KEYS = {
    "POOL_SIZE": "DB_POOL_SIZE",
    "MAX_OVERFLOW": "DB_MAX_OVERFLOW",
    "POOL_RECYCLE": "DB_POOL_RECYCLE",
    "POOL_TIMEOUT": "DB_POOL_TIMEOUT",
    "ECHO": "DB_ECHO",
    "ECHO_POOL": "DB_ECHO_POOL",
}
ENV_MONITORING = "DB_ENABLE_MONITORING"
_PRIMARY_POOL = "main"

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


def env_name(pool: str, key: str) -> str:
    """The environment variable that overrides ``key`` of ``pool``."""
    base = _ENV_POOL_KEYS[key]
    if pool == _PRIMARY_POOL:
        return base
    return f"{re.sub(r'[^A-Za-z0-9]', '_', pool).upper()}_{base}"


def _parse_env_int(raw: str, var: str, out: _Collector, *, minimum: int) -> int | None:
    """A whole number of at least ``minimum``, or None (and E010)."""
    try:
        value = int(raw.strip())
    except ValueError:
        out.add(
            10,
            f"The environment variable {var}={raw!r} is not a whole number.",
            f"Set {var} to a whole number of at least {minimum}, or unset it.",
        )
        return None
    if value < minimum:
        out.add(
            10,
            f"The environment variable {var}={raw!r} is below the minimum of {minimum}.",
            f"Set {var} to {minimum} or more, or unset it.",
        )
        return None
    return value


def _parse_env_float(raw: str, var: str, out: _Collector) -> float | None:
    """A positive number of seconds up to ``MAX_SECONDS``, or None (and E010)."""
    try:
        value = float(raw.strip())
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0 or value > MAX_SECONDS:
        out.add(
            10,
            f"The environment variable {var}={raw!r} is not a positive number of seconds "
            f"up to {MAX_SECONDS} (a day).",
            f"Set {var} to a positive number such as 30, or unset it.",
        )
        return None
    return value


def _parse_env_bool(raw: str, var: str, out: _Collector, *, allow_debug: bool) -> bool | str | None:
    """true/false and their spellings, "debug" where allowed, or None (and E010)."""
    text = raw.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    if allow_debug and text == "debug":
        return "debug"
    extra = ", debug" if allow_debug else ""
    out.add(
        10,
        f"The environment variable {var}={raw!r} is not a boolean.",
        f"Set {var} to one of true, false, 1, 0, yes, no, on, off{extra}, or unset it.",
    )
    return None


def _env_overrides(pool: str, environ: Mapping[str, str], out: _Collector) -> dict[str, Any]:
    """The pool's keys that its environment variables set, each parsed by its kind."""
    found: dict[str, Any] = {}
    for key in _ENV_POOL_KEYS:
        var = env_name(pool, key)
        raw = environ.get(var)
        if raw is None:
            continue
        value: Any
        if key in ("POOL_SIZE", "MAX_OVERFLOW"):
            value = _parse_env_int(raw, var, out, minimum=0)
        elif key == "POOL_RECYCLE":
            value = _parse_env_int(raw, var, out, minimum=-1)
        elif key == "POOL_TIMEOUT":
            value = _parse_env_float(raw, var, out)
        else:
            value = _parse_env_bool(raw, var, out, allow_debug=True)
        if value is not None:
            found[key] = value
    return found
