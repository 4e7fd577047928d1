"""Pool sizing advice from what the fleet observed, and a capacity check against the server.

:func:`advise_pools` reads every live process's metrics from the fleet cache
(``local=True``: this process's) and gives, per pool, at most one
recommendation per setting, each quoting the evidence it rests on (in the
message, and as ``evidence``): checkouts, checkouts that queued for a
connection, timeouts, the peak in use of any one process, leaks. A pool grows
only when callers queued or timed out; overflow that was used without anyone
queueing is turned into pool size at the same capacity; a pool used far below
its size shrinks. The capacity check adds up, per database server, processes x
(size + overflow) and compares it with the server's ``max_connections``
(PostgreSQL, MySQL).
"""

from __future__ import annotations

import threading
from collections import defaultdict
from typing import Any

from sqlalchemy import text

from ..engines import get_entry, pool_names
from ._fleet import pool_totals, read_fleet

__all__ = ["advise_pools"]

#: Checkouts observed before sizing advice is given.
MIN_CHECKOUTS = 50
#: Share of checkouts that queued for a connection from which a pool is too small.
QUEUED_SHARE = 0.01
#: Checkouts observed before advice to shrink a pool (it must have been busy enough to tell).
SHRINK_CHECKOUTS = 1000
#: Share of usable server connections above which the capacity check warns.
CAPACITY_WARNING = 0.8


def _advice(
    pool: str,
    severity: str,
    message: str,
    recommendation: str,
    *,
    setting: str | None,
    evidence: dict[str, Any],
) -> dict[str, Any]:
    return {
        "pool": pool,
        "severity": severity,
        "message": message,
        "recommendation": recommendation,
        "setting": setting,
        "evidence": evidence,
    }


def _evidence(total: dict[str, Any]) -> dict[str, Any]:
    """What the advice on one pool rests on, across the processes that have it."""
    return {
        "processes": total["processes"],
        "checkouts": total["checkouts"],
        "queued": total.get("queued", 0),
        "timeouts": total["timeouts"],
        "peak_in_use": total["peak_checked_out"],
        "pool_size": total["pool_size"],
        "max_overflow": total["max_overflow"],
        "wait_p99_ms": total["acquire_wait_ms"]["p99"],
        "hold_p99_ms": total["hold_ms"]["p99"],
        "leaks": total["leaks"],
    }


def _size_advice(name: str, e: dict[str, Any]) -> dict[str, Any] | None:
    """The one POOL_SIZE recommendation the evidence supports, if any."""
    size, overflow, peak = e["pool_size"], e["max_overflow"], e["peak_in_use"]
    capacity = size + overflow
    seen = (
        f"{e['checkouts']} checkout(s) in {e['processes']} process(es), {e['queued']} queued "
        f"for a connection, {e['timeouts']} timed out; at most {peak} of {capacity} "
        "connections in use at once in any process"
    )
    if e["timeouts"] and peak < capacity:
        # Timeouts with connections to spare: opening them failed or was too slow.
        return _advice(
            name,
            "warning",
            f"{seen}: checkouts timed out while the pool was not full.",
            "Do not grow the pool: check that the database accepts connections in time "
            "(the pool's connect errors and connect time).",
            setting=None,
            evidence=e,
        )
    if e["timeouts"]:
        target = size + max(2, size // 2)
        return _advice(
            name,
            "critical",
            f"{seen}: the pool was full and callers gave up.",
            f"Raise POOL_SIZE from {size} to {target}, or shorten the transactions that hold "
            f"connections (p99 held {e['hold_p99_ms']:.1f} ms).",
            setting="POOL_SIZE",
            evidence=e,
        )
    if e["queued"] and e["queued"] >= QUEUED_SHARE * e["checkouts"]:
        return _advice(
            name,
            "warning",
            f"{seen}: callers waited for a free connection (p99 acquire wait "
            f"{e['wait_p99_ms']:.1f} ms).",
            f"Raise POOL_SIZE from {size} to {size + 2} so that callers stop queueing.",
            setting="POOL_SIZE",
            evidence=e,
        )
    if e["queued"]:
        return None  # a few waits among many checkouts: no reason to change anything
    if peak > size:
        return _advice(
            name,
            "warning",
            f"{seen}: overflow connections were needed, and each one is opened and closed "
            "again, paying the connect time each time.",
            f"Raise POOL_SIZE from {size} to {peak} and lower MAX_OVERFLOW from {overflow} to "
            f"{capacity - peak}: the same capacity of {capacity}, kept open.",
            setting="POOL_SIZE",
            evidence=e,
        )
    if e["checkouts"] >= SHRINK_CHECKOUTS and size > 2 and peak * 2 <= size:
        return _advice(
            name,
            "info",
            f"{seen}: the pool is larger than any process needed.",
            f"Lower POOL_SIZE from {size} to {max(peak + 1, 2)} to free server connections.",
            setting="POOL_SIZE",
            evidence=e,
        )
    return None


def _pool_advice(name: str, total: dict[str, Any]) -> list[dict[str, Any]]:
    e = _evidence(total)
    found: list[dict[str, Any]] = []
    sized = _size_advice(name, e)
    if sized is not None:
        found.append(sized)
    if e["leaks"]:
        found.append(
            _advice(
                name,
                "warning",
                f"{e['leaks']} connection(s) were held longer than LEAK_THRESHOLD (see the "
                "mingus_sessions.leaks log for where they were checked out).",
                "Close sessions with session_scope() (or close() in a finally block).",
                setting=None,
                evidence=e,
            )
        )
    if e["checkouts"] < MIN_CHECKOUTS and not found:
        found.append(
            _advice(
                name,
                "info",
                f"Only {e['checkouts']} checkout(s) observed so far in {e['processes']} "
                "process(es).",
                "Ask again after some traffic; sizing advice needs observations.",
                setting=None,
                evidence=e,
            )
        )
    return found


def _unobserved(name: str) -> dict[str, Any]:
    return _advice(
        name,
        "info",
        "No live process of the fleet has published this pool's metrics.",
        "Ask again once servers and workers have served traffic: each publishes every "
        'FLEET["INTERVAL"] seconds to FLEET["CACHE"], which they must share.',
        setting=None,
        evidence={"processes": 0},
    )


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


def _capacity(
    totals: dict[str, dict[str, Any]], processes: int
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Per database server: processes x (size + overflow) against its limit; and the advice."""
    # max_connections is per server: pools on two aliases of one server share it.
    by_server: dict[str, list[str]] = defaultdict(list)
    for name in pool_names():
        by_server[_server_of(name)].append(name)
    capacity: dict[str, Any] = {}
    advice: list[dict[str, Any]] = []
    for server, names in by_server.items():
        database = ", ".join(sorted({get_entry(n).config.database for n in names}))
        pools: dict[str, Any] = {}
        for name in names:
            size = get_entry(name).config.capacity
            using = totals[name]["processes"] if name in totals else 0
            pools[name] = {"processes": using, "capacity": size, "demand": using * size}
        demand = sum(p["demand"] for p in pools.values())
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
        evidence = {"processes": processes, "demand": demand, "usable": usable}
        if usable is not None and demand > usable:
            advice.append(
                _advice(
                    ", ".join(names),
                    "critical",
                    f"Server {server} ({database}): {processes} process(es) x (size + overflow) "
                    f"may open {demand} connections, more than the {usable} the server allows "
                    f"(max_connections {most}, {reserved} reserved).",
                    "Lower POOL_SIZE / MAX_OVERFLOW, run fewer processes, put PgBouncer in front "
                    '(POOL_CLASS "null"), or raise max_connections.',
                    setting=None,
                    evidence=evidence,
                )
            )
        elif usable is not None and demand > usable * CAPACITY_WARNING:
            advice.append(
                _advice(
                    ", ".join(names),
                    "warning",
                    f"Server {server} ({database}): the pools may open {demand} of the {usable} "
                    "connections the server allows; one more process could exhaust it.",
                    "Leave headroom: lower MAX_OVERFLOW or raise max_connections.",
                    setting=None,
                    evidence=evidence,
                )
            )
    return capacity, advice


def advise_pools(*, local: bool = False) -> dict[str, Any]:
    """``{"advice": [...], "capacity": {...}, "fleet": {...}}`` from every live process.

    Each advice is ``{"pool", "severity", "message", "recommendation", "setting",
    "evidence"}``. ``fleet`` says where the figures come from (``source``: ``"fleet"`` or,
    with ``local``, ``"local"``), how many ``processes``, and, when the fleet cache cannot
    be read, ``error`` (then there is no advice: this process alone is not the deployment).
    """
    view = read_fleet(local=local)
    fleet_info: dict[str, Any] = {"source": view.source, "processes": len(view.processes)}
    if view.note:
        fleet_info["note"] = view.note
    if view.problem is not None:
        fleet_info["error"] = view.problem
        return {"advice": [], "capacity": {}, "fleet": fleet_info}
    totals = pool_totals(view.processes, pool_names())
    advice: list[dict[str, Any]] = []
    for name in pool_names():
        if name in totals:
            advice.extend(_pool_advice(name, totals[name]))
        else:
            advice.append(_unobserved(name))
    capacity, warnings = _capacity(totals, len(view.processes))
    return {"advice": advice + warnings, "capacity": capacity, "fleet": fleet_info}
