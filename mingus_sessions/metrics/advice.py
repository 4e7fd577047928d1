"""Pool sizing advice from what was observed, and a capacity check against the server.

:func:`advise_pools` reads each pool's metrics (every live process's when the
fleet view has them, else this process's): timeouts, acquire waits, overflow
use, peak checked out and leaks, and turns them into concrete recommendations.
The capacity check adds up, per database, live processes x (size + overflow)
and compares it with the server's ``max_connections`` (PostgreSQL, MySQL).
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from typing import Any

from sqlalchemy import text

from ..engines import get_entry, pool_names
from .api import get_pool_metrics

__all__ = ["advise_pools"]

logger = logging.getLogger("mingus_sessions")

#: Checkouts observed before sizing advice is given.
MIN_CHECKOUTS = 50
#: Acquire-wait p99 (ms) above which callers wait noticeably for connections.
WAIT_P99_MS = 10.0
#: Share of usable server connections above which the capacity check warns.
CAPACITY_WARNING = 0.8


def _advice(pool: str, severity: str, message: str, recommendation: str) -> dict[str, str]:
    return {
        "pool": pool,
        "severity": severity,
        "message": message,
        "recommendation": recommendation,
    }


def _observed() -> tuple[dict[str, list[dict[str, Any]]], int]:
    """Per pool, the metrics dicts of every live process; and how many processes."""
    from ..monitor import get_fleet_metrics

    per_pool: dict[str, list[dict[str, Any]]] = defaultdict(list)
    try:
        fleet = get_fleet_metrics()
    except Exception:
        logger.debug("Fleet view unavailable for advice", exc_info=True)
        fleet = []
    for process in fleet:
        for name, metrics in process.get("pools", {}).items():
            per_pool[name].append(metrics)
    processes = len(fleet)
    if not fleet:  # this process alone
        for name, metrics in get_pool_metrics().items():
            per_pool[name].append(metrics.as_dict())
        processes = 1
    return per_pool, processes


def _pool_advice(name: str, seen: list[dict[str, Any]]) -> list[dict[str, str]]:
    first = seen[0]
    size, overflow_max, timeout = first["pool_size"], first["max_overflow"], first["timeout"]
    checkouts = sum(m["checkouts"] for m in seen)
    timeouts = sum(m["timeouts"] for m in seen)
    leaks = sum(m["leaks"] for m in seen)
    peak = max(m.get("peak_checked_out", m["checked_out"]) for m in seen)
    wait_p99 = max(m["acquire_wait_ms"]["p99"] for m in seen)
    hold_p99 = max(m["hold_ms"]["p99"] for m in seen)
    found: list[dict[str, str]] = []
    if timeouts:
        target = max(peak + 2, size + max(2, size // 2))
        found.append(
            _advice(
                name,
                "critical",
                f"{timeouts} checkout(s) timed out after {timeout:g} s; at most {peak} connections "
                f"were in use at once (size {size}, overflow {overflow_max}).",
                f"Raise POOL_SIZE to {target}, or find the transactions that hold connections "
                f"(p99 held {hold_p99:.1f} ms) and shorten them.",
            )
        )
    elif checkouts >= MIN_CHECKOUTS and wait_p99 > WAIT_P99_MS:
        found.append(
            _advice(
                name,
                "warning",
                f"Callers waited {wait_p99:.1f} ms (p99) for a connection; peak in use {peak} of "
                f"{size + overflow_max}.",
                f"Raise POOL_SIZE to {max(peak + 2, size + 2)} so that callers stop queueing.",
            )
        )
    if peak > size and not timeouts:
        found.append(
            _advice(
                name,
                "warning",
                f"Overflow was needed: up to {peak} connections for a POOL_SIZE of {size}. "
                "Overflow "
                "connections are opened and closed again, paying the connect time each time.",
                f"Raise POOL_SIZE to {peak}.",
            )
        )
    if checkouts >= MIN_CHECKOUTS * 20 and size > 2 and peak * 2 <= size and not timeouts:
        target = max(peak + 1, 2)
        found.append(
            _advice(
                name,
                "info",
                f"At most {peak} of {size} connections were ever in use over {checkouts} "
                "checkouts.",
                f"Lower POOL_SIZE to {target} to free server connections.",
            )
        )
    if leaks:
        found.append(
            _advice(
                name,
                "warning",
                f"{leaks} connection(s) were held longer than LEAK_THRESHOLD (see the "
                "mingus_sessions.leaks log for where they were checked out).",
                "Close sessions with session_scope() (or close() in a finally block).",
            )
        )
    if checkouts < MIN_CHECKOUTS and not found:
        found.append(
            _advice(
                name,
                "info",
                f"Only {checkouts} checkout(s) observed so far.",
                "Ask again after some traffic; sizing advice needs observations.",
            )
        )
    return found


def _server_of(pool: str) -> str:
    """The server a pool talks to, without credentials: ``backend://host:port``."""
    entry = get_entry(pool)
    url = entry.spec.url
    if entry.spec.vendor == "sqlite":
        return f"sqlite:{url.database or ':memory:'}"
    return f"{entry.spec.backend}://{url.host or 'localhost'}:{url.port or 'default'}"


#: Seconds to wait for the server's limits before giving up on them.
LIMITS_TIMEOUT = 5.0


def _server_limits(pool: str) -> tuple[int | None, int]:
    """(max_connections, reserved for superusers) of the pool's server, if it has them.

    Read in a daemon thread with a deadline, so a server that accepts
    connections but never answers cannot hang the caller.
    """
    found: dict[str, Any] = {}

    def read() -> None:
        try:
            found["limits"] = _read_limits(pool)
        except Exception as exc:  # noqa: BLE001 - handed to the caller below
            found["error"] = exc

    thread = threading.Thread(target=read, name=f"mingus-limits-{pool}", daemon=True)
    thread.start()
    thread.join(LIMITS_TIMEOUT)
    if "limits" in found:
        return found["limits"]  # type: ignore[no-any-return]
    if "error" in found:
        raise found["error"]
    raise TimeoutError(f"no answer within {LIMITS_TIMEOUT:g} s")


def _read_limits(pool: str) -> tuple[int | None, int]:
    entry = get_entry(pool)
    vendor = entry.spec.vendor
    if vendor not in ("postgresql", "mysql"):
        return None, 0
    with entry.engine.connect() as conn:
        if vendor == "postgresql":
            most = int(conn.execute(text("SHOW max_connections")).scalar_one())
            reserved = int(conn.execute(text("SHOW superuser_reserved_connections")).scalar_one())
            return most, reserved
        return int(conn.execute(text("SELECT @@max_connections")).scalar_one()), 1


def advise_pools() -> dict[str, Any]:
    """``{"advice": [{"pool", "severity", "message", "recommendation"}], "capacity": {...}}``."""
    per_pool, processes = _observed()
    advice: list[dict[str, str]] = []
    for name in pool_names():
        seen = per_pool.get(name) or [get_pool_metrics(name).as_dict()]
        advice.extend(_pool_advice(name, seen))

    # max_connections is per server: pools on two aliases of one server share it.
    by_server: dict[str, list[str]] = defaultdict(list)
    for name in pool_names():
        by_server[_server_of(name)].append(name)
    capacity: dict[str, Any] = {}
    for server, names in by_server.items():
        database = ", ".join(sorted({get_entry(n).config.database for n in names}))
        demand = 0
        pools: dict[str, Any] = {}
        for name in names:
            config = get_entry(name).config
            using = max(len(per_pool.get(name, [])), 1) if processes > 1 else processes
            pools[name] = {
                "processes": using,
                "capacity": config.capacity,
                "demand": using * config.capacity,
            }
            demand += using * config.capacity
        try:
            most, reserved = _server_limits(names[0])
            error = None
        except Exception as exc:  # noqa: BLE001 - reported in the result, never raised
            most, reserved, error = None, 0, f"server limit unavailable ({type(exc).__name__})"
        usable = None if most is None else most - reserved
        capacity[server] = {
            "databases": database,
            "backend": get_entry(names[0]).spec.backend,
            "processes": processes,
            "demand": demand,
            "max_connections": most,
            "reserved": reserved,
            "usable": usable,
            "headroom": None if usable is None else usable - demand,
            "pools": pools,
            **({"error": error} if error else {}),
        }
        if usable is None:
            continue
        if demand > usable:
            advice.append(
                _advice(
                    ", ".join(names),
                    "critical",
                    f"Server {server} ({database}): {processes} process(es) x (size + overflow) "
                    f"may open {demand} connections, more than the {usable} the server allows "
                    f"(max_connections {most}, {reserved} reserved).",
                    "Lower POOL_SIZE / MAX_OVERFLOW, run fewer processes, put PgBouncer in front "
                    '(POOL_CLASS "null"), or raise max_connections.',
                )
            )
        elif demand > usable * CAPACITY_WARNING:
            advice.append(
                _advice(
                    ", ".join(names),
                    "warning",
                    f"Server {server} ({database}): the pools may open {demand} of the {usable} "
                    "connections "
                    "the server allows; one more process could exhaust it.",
                    "Leave headroom: lower MAX_OVERFLOW or raise max_connections.",
                )
            )
    return {"advice": advice, "capacity": capacity}
