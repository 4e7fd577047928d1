"""A pool's read replicas: ``REPLICAS`` and ``MAX_REPLICA_LAG`` (E021).

Each replica becomes a pool of its own, named ``"<pool>@<alias>"``: a copy of
its primary's settings on the replica's ``DATABASES`` alias, read-only. As a
pool it has its own engine, breaker, metrics and health, so every surface shows
it without knowing about replicas. Replicas are PostgreSQL streaming standbys:
their lag and the read-your-writes positions are PostgreSQL's WAL positions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from .readers import _Collector, _show
from .schema import SUPPORTED_ENGINES, PoolConfig, key_path, replica_pool_name

REPLICAS_CHECK = 20


def _replica_aliases(
    name: str, values: Mapping[str, Any], databases: Mapping[str, str], out: _Collector
) -> tuple[str, ...]:
    """``REPLICAS``: distinct PostgreSQL ``DATABASES`` aliases other than the pool's own."""
    where = key_path("POOLS", name, "REPLICAS")
    given = values["REPLICAS"]
    if given is None:
        return ()
    if isinstance(given, str) or not isinstance(given, list | tuple):
        out.add(
            REPLICAS_CHECK,
            f"{where} must be a list of DATABASES aliases, not {_show(given)}.",
            f'Set {where} to a list such as ["replica"], or [] for no replicas.',
        )
        return ()
    if not given:
        return ()
    database = values["DATABASE"]
    aliases: list[str] = []
    for alias in given:
        problem = _replica_problem(alias, database, aliases, databases)
        if problem is not None:
            out.add(REPLICAS_CHECK, f"{where} {problem[0]}", problem[1])
            continue
        aliases.append(alias)
    primary_engine = databases.get(database) if isinstance(database, str) else None
    if aliases and SUPPORTED_ENGINES.get(primary_engine or "") != "postgresql":
        out.add(
            REPLICAS_CHECK,
            f"{where} is set, but the pool's database DATABASES[{_show(database)}] is not "
            "PostgreSQL: routing to replicas follows PostgreSQL's WAL positions.",
            f"Remove {where}, or point a pool of its own at each replica.",
        )
        return ()
    return tuple(aliases)


def _replica_problem(
    alias: Any, database: Any, seen: list[str], databases: Mapping[str, str]
) -> tuple[str, str] | None:
    """What is wrong with one entry of ``REPLICAS`` (message tail, hint), or None."""
    if not isinstance(alias, str) or alias not in databases:
        known = ", ".join(sorted(databases)) or "none"
        return (
            f"names {_show(alias)}, which is not in DATABASES (known: {known}).",
            "List the DATABASES aliases of the pool's replicas.",
        )
    if alias == database:
        return (
            f'names "{alias}", the pool\'s own DATABASE.',
            "List only the replicas; the pool's DATABASE is its primary.",
        )
    if alias in seen:
        return (f'names "{alias}" twice.', "List each replica once.")
    if SUPPORTED_ENGINES.get(databases[alias]) != "postgresql":
        return (
            f'names "{alias}", whose ENGINE {databases[alias]!r} is not PostgreSQL.',
            "Replicas are PostgreSQL streaming standbys; list only those.",
        )
    return None


def _expand_replicas(pools: dict[str, PoolConfig], out: _Collector) -> None:
    """Add each pool's replicas to ``pools``, as read-only pools of their own."""
    for name, pool in list(pools.items()):
        if not pool.replicas:
            continue
        for replica in pool.replicas:
            if replica in pools:
                out.add(
                    REPLICAS_CHECK,
                    f'{key_path("POOLS", name, "REPLICAS")} makes a pool "{replica}" for its '
                    f"replica, but {key_path('POOLS', replica)} exists already.",
                    f'Rename the pool "{replica}": "<pool>@<alias>" names a replica\'s pool.',
                )
                continue
            pools[replica] = dataclasses.replace(
                pool,
                name=replica,
                database=replica.removeprefix(f"{name}@"),
                read_only=True,
                replicas=(),
                replica_of=name,
            )


def _replica_pools(name: str, aliases: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(replica_pool_name(name, alias) for alias in aliases)
