"""Plain-text rendering of the metrics dicts for the pool commands.

Private and pure: dicts in, lines out, no Django and no pool access, so that
what an operator reads is exactly what ``--json`` prints, formatted.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["advice_lines", "fleet_lines", "pool_lines", "session_line", "table"]

_SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}
#: Cells right-aligned when a whole column looks like this: counts, ratios, "-".
_NUMERIC = re.compile(r"^[-+\d./% ]+$")


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    """Columns padded to their widest cell; text left-aligned, numbers right-aligned."""
    cells = [[str(cell) for cell in row] for row in rows]
    widths = [len(header) for header in headers]
    for row in cells:
        widths = [max(width, len(cell)) for width, cell in zip(widths, row, strict=True)]
    numeric = [
        bool(cells) and all(_NUMERIC.match(row[i]) for row in cells) for i in range(len(headers))
    ]

    def line(values: Sequence[str]) -> str:
        padded = [
            value.rjust(width) if right else value.ljust(width)
            for value, width, right in zip(values, widths, numeric, strict=True)
        ]
        return "  ".join(padded).rstrip()

    return [line(headers), *(line(row) for row in cells)]


def _percent(ratio: float) -> str:
    return f"{ratio * 100:.0f}%"


def _use_of(pool: Mapping[str, Any]) -> str:
    """``3/15 20%``; a pool class without a limit (capacity 0): ``3 in use (no limit)``."""
    if not pool["capacity"]:
        return f"{pool['checked_out']} in use (no limit)"
    return f"{pool['checked_out']}/{pool['capacity']} {_percent(pool['utilization'])}"


def pool_lines(pools: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """One row per pool (``PoolMetrics.as_dict()`` values, or the fleet's totals, which add
    the number of processes: then a ``PROCS`` column)."""
    procs = any("processes" in m for m in pools.values())
    headers = (
        "POOL",
        *(("PROCS",) if procs else ()),
        "DATABASE",
        "BACKEND",
        "SIZE+OVF",
        "OUT",
        "IDLE",
        "OVERFLOW",
        "WAITING",
        "UTIL",
        "ACQ P99 MS",
        "TIMEOUTS",
        "LEAKS",
        "BREAKER",
    )
    rows = [
        (
            name,
            *((m.get("processes", 1),) if procs else ()),
            m["database"],
            m["backend"],
            f"{m['pool_size']}+{m['max_overflow']}",
            m["checked_out"],
            m["checked_in"],
            m["overflow"],
            m["waiting"],
            _percent(m["utilization"]) if m["capacity"] else "-",
            f"{m['acquire_wait_ms']['p99']:.1f}",
            m["timeouts"],
            m["leaks"],
            m["circuit_state"],
        )
        for name, m in pools.items()
    ]
    return table(headers, rows)


def replica_lines(pools: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """One line per replica's pool: whose replica it is, its state and its lag ([] if none)."""
    found = [(name, m) for name, m in pools.items() if m.get("replica_of")]
    if not found:
        return []
    lines = [
        "",
        "Replicas (read_only scopes of their primary's pool; the primary serves otherwise):",
    ]
    for name, m in found:
        lag = m.get("replica_lag")
        shown = "lag unknown" if lag is None else f"lag {lag:.1f} s"
        lines.append(f"  {name} of {m['replica_of']}: {m.get('replica_state') or '-'}, {shown}")
    return lines


def session_line(sessions: Mapping[str, int]) -> str:
    """``get_session_stats()`` on one line."""
    return (
        f"Sessions: {sessions['total_sessions']} total, {sessions['active_sessions']} active, "
        f"{sessions['committed_transactions']} committed, "
        f"{sessions['transaction_rollbacks']} rolled back, "
        f"{sessions['failed_sessions']} failed, {sessions['savepoints']} savepoints, "
        f"{sessions['retries']} retries"
    )


def fleet_lines(fleet: Sequence[Mapping[str, Any]], now: float) -> list[str]:
    """One row per process: host, pid, role, seconds since it published, each pool's use
    (and ``!`` after a pool whose breaker is not closed or that timed out)."""
    if not fleet:
        return [
            "No process is publishing: monitoring runs in server and worker processes, "
            'and FLEET["CACHE"] must be a cache they share.'
        ]
    names: list[str] = []
    for process in fleet:
        names.extend(name for name in process.get("pools", {}) if name not in names)
    rows = []
    for process in fleet:
        pools = process.get("pools", {})
        used = [
            _use_of(pools[name]) + _alarm(pools[name]) if name in pools else "-" for name in names
        ]
        age = max(now - float(process["updated_at"]), 0.0)
        rows.append((process["host"], process["pid"], process["role"], f"{age:.0f}s", *used))
    headers = ("HOST", "PID", "ROLE", "AGE", *names)
    return table(headers, rows)


def _alarm(pool: Mapping[str, Any]) -> str:
    """`` breaker open``, `` 3 timeouts``: what is wrong with a process's pool, if anything."""
    found = []
    if pool.get("circuit_state", "closed") != "closed":
        found.append(f"breaker {pool['circuit_state']}")
    if pool.get("timeouts"):
        found.append(f"{pool['timeouts']} timeouts")
    if pool.get("replica_of") and pool.get("replica_state") not in ("serving", "unsampled"):
        found.append(f"replica {pool['replica_state']}")
    return f" ({', '.join(found)})" if found else ""


def advice_lines(result: Mapping[str, Any]) -> list[str]:
    """``advise_pools()``: the advice, most severe first, then capacity per server."""
    lines = ["Advice:"]
    advice = sorted(result["advice"], key=lambda a: _SEVERITY_ORDER.get(a["severity"], 3))
    for item in advice:
        lines.append(f"  [{item['severity']}] {item['pool']}: {item['message']}")
        lines.append(f"      -> {item['recommendation']}")
    if not advice:
        lines.append("  none")
    lines.append("")
    lines.append("Capacity:")
    rows = []
    for c in result["capacity"].values():
        rows.append(
            (
                c["databases"].replace(", ", ","),
                c["backend"],
                c["processes"],
                c["demand"],
                "-" if c["max_connections"] is None else c["max_connections"],
                c["reserved"],
                "-" if c["headroom"] is None else c["headroom"],
                c.get("error", ""),
            )
        )
    headers = (
        "DATABASES",
        "BACKEND",
        "PROCESSES",
        "DEMAND",
        "MAX_CONNECTIONS",
        "RESERVED",
        "HEADROOM",
        "NOTE",
    )
    lines.extend("  " + line for line in table(headers, rows))
    return lines
