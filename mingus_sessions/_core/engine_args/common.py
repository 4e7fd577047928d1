"""What every backend's rules share: the split of ``OPTIONS``, the port, the result's shape."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import URL
from sqlalchemy.pool import Pool

from ..config import PoolConfig
from ..errors import ConfigurationError

__all__ = ["DEFAULT_CONNECT_TIMEOUT", "VendorArgs", "port_of", "setting_key", "split_options"]

#: Seconds a new connection may take before the attempt fails (PostgreSQL, MySQL).
DEFAULT_CONNECT_TIMEOUT = 10


@dataclass
class VendorArgs:
    """What one backend's rules make of a ``DATABASES`` entry and a pool's settings."""

    url: URL
    driver: str
    #: Django's OPTIONS (translated) under the pool's CONNECT_ARGS, which win.
    connect_args: dict[str, Any]
    isolation: str | None
    on_connect: list[str] = field(default_factory=list)
    sqlite_begin: str | None = None
    #: A pool class the backend requires whatever POOL_CLASS says (SQLite in memory).
    pool_class: type[Pool] | None = None


def split_options(
    settings_dict: Mapping[str, Any], django_only: Collection[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A copy of ``OPTIONS`` without the keys only Django understands, and those keys apart."""
    options = dict(settings_dict.get("OPTIONS") or {})
    return options, {key: options.pop(key) for key in list(options) if key in django_only}


def port_of(value: Any, pool: PoolConfig) -> int | None:
    """``PORT`` as an int (``None`` when empty); anything else is a configuration error."""
    if value in (None, ""):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ConfigurationError(
            f'DATABASES["{pool.database}"]["PORT"] is {value!r}, not a port number.',
            pool=pool.name,
        ) from None


def setting_key(pool: PoolConfig, key: str) -> str:
    """How an error message names one of ``pool``'s settings."""
    return f'MINGUS_SESSIONS["POOLS"]["{pool.name}"]["{key}"]'
