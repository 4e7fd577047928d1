"""The fleet cache: each process's snapshot, the index of members, and fleet-wide actions.

Glue under the sampler (:mod:`mingus_sessions.monitor`) and the surfaces: the
layout of what processes share through the Django cache named in
``FLEET["CACHE"]``. The public functions are :func:`get_fleet_metrics` (also in
:mod:`mingus_sessions.metrics`) and the surfaces' commands and pages; the rest
is the package's own.

- ``mingus_sessions:fleet:<host>:<pid>``: a process's snapshot, living 3 intervals;
- ``mingus_sessions:fleet:index``: the members, changed only under its lock;
- ``mingus_sessions:fleet:actions``: the last :data:`ACTIONS_KEPT` actions (reset,
  dispose, reset the breaker) that every process applies at its next sample and
  then lists in its snapshot, under ``"actions"``, so that whoever issued one
  can tell which processes applied it.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import os
import random
import secrets
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from . import conf
from ._core.recorder import PoolRecorder
from ._core.snapshot import PoolMetrics, snapshot
from ._core.state import state
from .breakers import get_circuit_breaker
from .engines import get_entry, pool_names

__all__ = [
    "ACTIONS_KEPT",
    "KINDS",
    "STALE_INTERVALS",
    "action_progress",
    "apply_action",
    "change_locked",
    "fleet_cache",
    "get_fleet_metrics",
    "issue",
    "listed_actions",
    "local_snapshot",
    "member",
    "new_action",
    "process_snapshot",
    "publish",
    "read_pools",
    "reset_local_metrics",
    "unpublish",
]

logger = logging.getLogger("mingus_sessions")

PREFIX = "mingus_sessions:fleet:"
INDEX = PREFIX + "index"
INDEX_LOCK = PREFIX + "index-lock"
ACTIONS = PREFIX + "actions"
ACTIONS_LOCK = PREFIX + "actions-lock"
#: A process that has not published for this many intervals is no longer listed.
STALE_INTERVALS = 3
#: A member re-stamps its index entry after this many intervals...
INDEX_REFRESH_INTERVALS = 10
#: ...and the index forgets members silent for this many (a wide margin over the refresh).
INDEX_PRUNE_INTERVALS = 30
#: Lifetime of a lock, in whole seconds (Redis and Memcached round timeouts down to
#: seconds): it frees itself this long after a holder that died while holding it.
INDEX_LOCK_LEASE = 5
#: How long a writer waits for a lock before it gives up (a publisher: until its next tick).
INDEX_LOCK_WAIT = 1.0
#: Actions kept listed, newest last: far more than are issued within a few intervals.
ACTIONS_KEPT = 20
#: What an action may do, in the order it does it.
KINDS = ("reset", "dispose", "reset-breaker")


def member(host: str, pid: int) -> str:
    """The name of a process in the fleet: ``host:pid``."""
    return f"{host}:{pid}"


def fleet_cache() -> Any:
    """The Django cache named in ``FLEET["CACHE"]``."""
    from django.core.cache import caches

    return caches[conf.get_config().fleet.cache]


# -- this process's snapshot -------------------------------------------------------------------


def read_pools() -> dict[str, PoolMetrics]:
    """Every configured pool's metrics; a pool that cannot be read is left out (and logged)."""
    pools: dict[str, PoolMetrics] = {}
    for name in pool_names():
        try:
            pools[name] = _pool_metrics(name)
        except Exception:
            # One pool that cannot be read (a missing driver) must not stop
            # the others' samples, leak scans and fleet entry.
            logger.warning("Monitoring could not read pool %s", name, exc_info=True)
    return pools


def _pool_metrics(name: str) -> PoolMetrics:
    return snapshot(get_entry(name), get_circuit_breaker(name).state)


def _histograms(name: str) -> dict[str, Any] | None:
    """The wait, use and create times of a pool in the fixed buckets, with their sums in µs."""
    probe = get_entry(name).probe
    if not isinstance(probe, PoolRecorder) or probe.acquire is None:
        return None
    return {
        key: {"counts": found.fixed_counts(), "sum_us": found.sum_us}
        for key, found in (
            ("wait_time", probe.acquire),
            ("use_time", probe.hold),
            ("create_time", probe.connect_time),
        )
    }


def process_snapshot(
    role: str,
    pools: dict[str, PoolMetrics],
    now: float,
    *,
    applied: dict[str, float] | None = None,
) -> dict[str, Any]:
    """What a process publishes: ``get_fleet_metrics()``'s dict for it."""
    histograms = {}
    for name in pools:
        found = _histograms(name)
        if found is not None:
            histograms[name] = found
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "role": role,
        "updated_at": now,
        "pools": {name: metrics.as_dict() for name, metrics in pools.items()},
        "sessions": state.sessions.snapshot(),
        "transactions": state.transactions.snapshot(),
        "histograms": histograms,
        "actions": dict(applied or {}),
    }


def local_snapshot(role: str) -> dict[str, Any]:
    """This process as the fleet would list it, read now (for ``--local`` and fresh pages)."""
    return process_snapshot(role, read_pools(), time.time())


# -- publishing --------------------------------------------------------------------------------


def publish(cache: Any, found: dict[str, Any], interval: float) -> None:
    """Store a process's snapshot and keep it in the index (re-stamped every 10 intervals)."""
    name = member(found["host"], found["pid"])
    now = float(found["updated_at"])
    # Whole seconds, rounded up: Redis and Memcached truncate a fractional timeout, which
    # would expire a snapshot before the readers call it stale.
    cache.set(PREFIX + name, found, timeout=max(math.ceil(interval * STALE_INTERVALS), 1))
    # The index is written only under its lock, so most ticks just read it: a member
    # rewrites it when it is missing from it (first tick, or the index was evicted) or
    # when its stamp is due, never every tick from every process.
    try:
        seen = (cache.get(INDEX) or {}).get(name)
    except Exception:
        logger.warning("Could not read the fleet index", exc_info=True)
        return
    if seen is not None and now - seen < interval * INDEX_REFRESH_INTERVALS:
        return
    horizon = now - interval * INDEX_PRUNE_INTERVALS

    def join(index: dict[str, float] | None) -> dict[str, float] | None:
        index = dict(index or {})
        index[name] = now
        return {other: at for other, at in index.items() if at >= horizon}

    change_locked(cache, INDEX, INDEX_LOCK, join)


def unpublish(cache: Any, name: str) -> None:
    """Remove a process from the fleet at once (it stopped monitoring)."""
    cache.delete(PREFIX + name)

    def leave(index: dict[str, float] | None) -> dict[str, float] | None:
        index = dict(index or {})
        return index if index.pop(name, None) is not None else None

    change_locked(cache, INDEX, INDEX_LOCK, leave)


def change_locked(
    cache: Any,
    key: str,
    lock: str,
    change: Callable[[Any], Any | None],
    *,
    raise_errors: bool = False,
) -> bool:
    """Read, change and write back ``key`` while holding ``lock``; whether it was written.

    Without the lock, two processes doing this at once each write back a copy lacking
    the other's change (which drops a live member, or an action). ``cache.add`` is the
    atomic primitive every Django cache backend has (Redis SET NX, Memcached add, locmem
    under its lock, the database cache's primary key), and its timeout makes the lock a
    lease: a holder that dies frees it after INDEX_LOCK_LEASE. Waiting is bounded; on
    giving up nothing is written. ``change`` returning None writes nothing. Cache errors
    are logged, or raised with ``raise_errors``.
    """
    token = secrets.token_hex(8)
    try:
        deadline = time.monotonic() + INDEX_LOCK_WAIT
        pause = 0.002
        while True:
            leased = time.monotonic()
            if cache.add(lock, token, timeout=INDEX_LOCK_LEASE):
                break
            if leased >= deadline:
                logger.warning("The fleet's %s stayed locked; not updated this time", key)
                return False
            time.sleep(pause * (0.5 + random.random()))  # jittered: no lockstep retries
            pause = min(pause * 2, 0.05)
        try:
            changed = change(cache.get(key))
            if changed is None:
                return False
            # A holder stalled past half its lease may have lost the lock to another
            # process; writing its copy now could undo that one's change.
            if time.monotonic() - leased > INDEX_LOCK_LEASE / 2:
                logger.warning("The fleet's %s update was too slow; not written", key)
                return False
            cache.set(key, changed, timeout=None)
            return True
        finally:
            # Release only our own lease: if it lapsed, the lock may be another's now.
            if cache.get(lock) == token:
                cache.delete(lock)
    except Exception:
        if raise_errors:
            raise
        logger.warning("Could not update the fleet's %s", key, exc_info=True)
        return False


def get_fleet_metrics() -> list[dict[str, Any]]:
    """One dict per live process (host, pid, role, updated_at, pools, sessions, ...).

    Raises what the cache raises when it cannot be reached.
    """
    config = conf.get_config()
    cache = fleet_cache()
    ttl = config.fleet.interval * STALE_INTERVALS
    now = time.time()
    index: dict[str, float] = cache.get(INDEX) or {}
    found = cache.get_many([PREFIX + name for name in index])
    live = [
        snap
        for snap in found.values()
        if isinstance(snap, dict) and now - float(snap.get("updated_at", 0)) <= ttl
    ]
    for snap in live:
        snap["updated_at_iso"] = dt.datetime.fromtimestamp(
            snap["updated_at"], tz=dt.UTC
        ).isoformat()
    return sorted(live, key=lambda snap: (snap["host"], snap["pid"]))


# -- actions -----------------------------------------------------------------------------------


def new_action(do: Sequence[str], pools: Sequence[str] | None) -> dict[str, Any]:
    """An action (not yet issued): what to do, to which pools (None: every pool), by whom."""
    unknown = [kind for kind in do if kind not in KINDS]
    if unknown or not do:
        raise ValueError(f"an action does some of {', '.join(KINDS)}, not {list(do)!r}")
    return {
        "id": secrets.token_hex(8),
        "do": [kind for kind in KINDS if kind in do],
        "pools": None if pools is None else list(pools),
        "issued_at": time.time(),
        "by": member(socket.gethostname(), os.getpid()),
    }


def issue(action: dict[str, Any]) -> None:
    """List ``action`` for every process to apply; raises when the cache cannot take it."""

    def append(listed: Any) -> list[dict[str, Any]]:
        kept = [a for a in (listed or []) if isinstance(a, dict) and a.get("id")]
        return [*kept, action][-ACTIONS_KEPT:]

    if not change_locked(fleet_cache(), ACTIONS, ACTIONS_LOCK, append, raise_errors=True):
        raise TimeoutError(f"the fleet's action list stayed locked for {INDEX_LOCK_WAIT:g} s")


def listed_actions(cache: Any) -> list[dict[str, Any]]:
    """The actions listed now, oldest first."""
    listed = cache.get(ACTIONS) or []
    return [a for a in listed if isinstance(a, dict) and a.get("id")]


def reset_local_metrics(pool: str | None = None) -> None:
    """Zero this process's counters and distributions of ``pool``, or of every pool and the
    session and named-transaction counters."""
    for name in (pool,) if pool is not None else pool_names():
        probe = get_entry(name).probe
        if isinstance(probe, PoolRecorder):
            probe.reset()
        else:
            probe.timeouts = 0
            probe.queued = 0
    if pool is None:
        state.sessions.reset()
        state.transactions.reset()


def apply_action(action: dict[str, Any]) -> None:
    """Do ``action`` in this process, on the pools it names that this process has."""
    known = pool_names()
    every = action.get("pools") is None
    names: Iterable[str] = known if every else [n for n in action["pools"] if n in known]
    names = list(names)
    for kind in action["do"]:
        if kind == "reset":
            if every:
                reset_local_metrics()
            else:
                for name in names:
                    reset_local_metrics(name)
        elif kind == "dispose":
            # Checked-in connections close now; checked-out ones close when they are
            # returned. The listeners sit on the Engine, so metrics go on recording.
            for name in names:
                get_entry(name).engine.dispose()
        elif kind == "reset-breaker":
            for name in names:
                get_circuit_breaker(name).reset()


def action_progress(
    action_id: str, targets: Iterable[str], fleet: list[dict[str, Any]]
) -> dict[str, list[str]]:
    """Which of ``targets`` applied the action, which have not yet, which left the fleet.

    ``fleet`` is a fresh :func:`get_fleet_metrics`; a live process that is not a target
    (it joined after the action was issued) is listed as applied if it says so.
    """
    live = {member(p["host"], p["pid"]): p for p in fleet}
    applied = sorted(name for name, p in live.items() if action_id in (p.get("actions") or {}))
    targets = list(dict.fromkeys(targets))
    return {
        "applied": applied,
        "pending": [name for name in targets if name in live and name not in applied],
        "gone": [name for name in targets if name not in live],
    }
