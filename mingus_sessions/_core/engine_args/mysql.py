"""MySQL's and MariaDB's engine arguments: mysqlclient, a socket HOST, utf8mb4, read-only."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import URL

from ..config import PoolConfig
from .common import DEFAULT_CONNECT_TIMEOUT, VendorArgs, port_of, split_options

__all__ = ["mysql_args"]

#: OPTIONS keys that Django's backend consumes itself.
DJANGO_ONLY = frozenset({"isolation_level"})


def mysql_args(settings_dict: Mapping[str, Any], pool: PoolConfig) -> VendorArgs:
    """The URL, connect arguments and per-connection SQL of a MySQL or MariaDB pool."""
    options, django_only = split_options(settings_dict, DJANGO_ONLY)
    host = settings_dict.get("HOST") or None
    if host and str(host).startswith("/"):
        options.setdefault("unix_socket", host)
        host = "localhost"
    url = URL.create(
        "mysql+mysqldb",
        username=settings_dict.get("USER") or None,
        password=settings_dict.get("PASSWORD") or None,
        host=host,
        port=port_of(settings_dict.get("PORT"), pool),
        database=settings_dict.get("NAME") or None,
    )
    options.setdefault("charset", "utf8mb4")
    options.setdefault("connect_timeout", DEFAULT_CONNECT_TIMEOUT)
    level = django_only.get("isolation_level")
    isolation = pool.isolation_level or (str(level).upper() if level else None)
    on_connect = ["SET SESSION TRANSACTION READ ONLY"] if pool.read_only else []
    return VendorArgs(url, "mysqldb", {**options, **pool.connect_args}, isolation, on_connect)
