"""Oracle's engine arguments: python-oracledb, a SID at HOST:PORT or a TNS name."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import URL

from ..config import PoolConfig
from ..errors import ConfigurationError
from .common import VendorArgs, port_of, setting_key, split_options

__all__ = ["oracle_args"]

#: OPTIONS keys that Django's backend consumes itself.
DJANGO_ONLY = frozenset({"threaded", "use_returning_into", "pool"})


def oracle_args(settings_dict: Mapping[str, Any], pool: PoolConfig) -> VendorArgs:
    """The URL and connect arguments of an Oracle pool; READ_ONLY is refused."""
    options, _ = split_options(settings_dict, DJANGO_ONLY)
    port = port_of(settings_dict.get("PORT"), pool)
    service = settings_dict.get("NAME") or None
    if port:
        # As Django's oracle backend: makedsn(HOST or localhost, PORT, NAME as the SID).
        url = URL.create(
            "oracle+oracledb",
            username=settings_dict.get("USER") or None,
            password=settings_dict.get("PASSWORD") or None,
            host=(settings_dict.get("HOST") or "").strip() or "localhost",
            port=port,
            database=service,
        )
    else:  # NAME is a TNS alias or an Easy Connect string
        url = URL.create(
            "oracle+oracledb",
            username=settings_dict.get("USER") or None,
            password=settings_dict.get("PASSWORD") or None,
            host=service,
        )
    if pool.read_only:
        raise ConfigurationError(
            f"{setting_key(pool, 'READ_ONLY')} is not supported on Oracle, which has no "
            "session-wide read-only mode. Use a read-only database user instead.",
            pool=pool.name,
        )
    return VendorArgs(url, "oracledb", {**options, **pool.connect_args}, pool.isolation_level)
