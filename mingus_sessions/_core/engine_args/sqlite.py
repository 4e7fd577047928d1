"""SQLite's engine arguments: the stdlib driver, URIs, in-memory databases, Django's PRAGMAs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

from sqlalchemy import URL
from sqlalchemy.pool import Pool, StaticPool

from ..config import PoolConfig
from .common import VendorArgs, split_options

__all__ = ["sqlite_args"]

#: OPTIONS keys that Django's backend consumes itself (init_command and
#: transaction_mode are translated below).
DJANGO_ONLY = frozenset({"init_command", "transaction_mode", "detect_types"})


def sqlite_args(settings_dict: Mapping[str, Any], pool: PoolConfig) -> VendorArgs:
    """The URL, connect arguments, per-connection SQL and ``BEGIN`` of a SQLite pool."""
    options, django_only = split_options(settings_dict, DJANGO_ONLY)
    name = str(settings_dict.get("NAME") or ":memory:")
    if name.startswith("file:"):
        path, _, query = name.partition("?")
        url = URL.create(
            "sqlite+pysqlite", database=path, query={**dict(parse_qsl(query)), "uri": "true"}
        )
    else:
        url = URL.create("sqlite+pysqlite", database=name)
    pool_class: type[Pool] | None = None
    if name == ":memory:":
        # A plain in-memory database lives in one connection: every
        # session of this pool must share it, whatever the thread.
        pool_class = StaticPool
    # Pooled connections move between threads (one at a time); sqlite3's
    # same-thread guard would refuse that, Django's test database included.
    options["check_same_thread"] = False
    # Django turns foreign keys on for every SQLite connection; so must we,
    # or SQLAlchemy writes could break constraints the ORM enforces.
    on_connect = ["PRAGMA foreign_keys = ON"]
    init_command = django_only.get("init_command")
    if init_command:
        on_connect.extend(s.strip() for s in str(init_command).split(";") if s.strip())
    mode = django_only.get("transaction_mode")
    if pool.read_only:
        on_connect.append("PRAGMA query_only = ON")
        # BEGIN IMMEDIATE takes a write lock, which a query-only connection refuses.
        begin = "BEGIN"
    else:
        begin = f"BEGIN {str(mode).upper()}" if mode else "BEGIN"
    return VendorArgs(
        url,
        "pysqlite",
        {**options, **pool.connect_args},
        pool.isolation_level,
        on_connect,
        sqlite_begin=begin,
        pool_class=pool_class,
    )
