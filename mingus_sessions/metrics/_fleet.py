"""How the surfaces see the fleet: every live process or this one, the fleet's totals, its
health, and fleet-wide actions.

Private to the package's surfaces (commands, views, admin actions). Reading the
fleet never raises: a cache that cannot be reached is a :class:`FleetView` whose
``problem`` is the one line to show. Totals are computed from the processes'
snapshots (``PoolMetrics.as_dict()`` values): gauges and counters add up,
percentiles are the highest of any process (an upper bound of the fleet's own:
if every process has 99 % of its waits below x, so has the fleet), and a pool's
size, overflow and peak stay per process, as the pool settings are.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import conf, fleet, monitor
from ..fleet import member

__all__ = [
    "ActionReport",
    "FleetView",
    "fleet_actions",
    "fleet_health",
    "name_of",
    "performance_totals",
    "pool_health",
    "pool_totals",
    "read_fleet",
    "run_action",
    "session_totals",
    "transaction_totals",
    "wait_for_action",
]

logger = logging.getLogger("mingus_sessions")

#: Cache backends whose entries other processes never see, and the check that says so.
UNSHARED = {"LocMemCache": "mingus_sessions.W001", "DummyCache": "mingus_sessions.W002"}
#: Utilization at or above which a pool is "nearly saturated" (as in health checks).
SATURATION = 0.9
_ORDER = {"healthy": 0, "degraded": 1, "unhealthy": 2}


@dataclass
class FleetView:
    """The processes a surface shows, where they come from, and what to say about them."""

    #: "fleet" (every live process, from the FLEET cache) or "local" (this process).
    source: str
    processes: list[dict[str, Any]] = field(default_factory=list)
    #: The cache could not be read: one line saying so (then ``processes`` is empty).
    problem: str | None = None
    #: Something the reader should know (an unshared cache, monitoring off).
    note: str | None = None


def name_of(process: dict[str, Any]) -> str:
    """``host:pid`` of a process dict."""
    return member(process["host"], int(process["pid"]))


def _cache_description() -> tuple[str, str]:
    from django.conf import settings

    alias = conf.get_config().fleet.cache
    backend = str(settings.CACHES.get(alias, {}).get("BACKEND", "?"))
    return alias, backend.rsplit(".", 1)[-1]


def unreachable(exc: BaseException) -> str:
    """The one line that says the fleet cache cannot be read (never its credentials)."""
    alias, backend = _cache_description()
    return (
        f'The FLEET cache "{alias}" ({backend}) cannot be reached ({type(exc).__name__}): '
        "the processes of the deployment cannot be shown"
    )


def _note() -> str | None:
    config = conf.get_config()
    if not config.monitoring:
        return "MONITORING is off: no process publishes to the fleet"
    alias, backend = _cache_description()
    check = UNSHARED.get(backend)
    if check is None:
        return None
    return (
        f'FLEET["CACHE"] "{alias}" is a {backend}, which other processes cannot read: each '
        f"process sees itself alone ({check})"
    )


def read_fleet(*, local: bool = False, role: str = "command", fresh: bool = False) -> FleetView:
    """Every live process of the fleet, or with ``local`` this process alone.

    ``fresh`` replaces this process's published entry (up to an interval old) with a
    snapshot read now, and adds it when it runs a sampler whose entry is missing.
    """
    if local:
        return FleetView("local", [fleet.local_snapshot(_role(role))])
    try:
        processes = fleet.get_fleet_metrics()
    except Exception as exc:  # noqa: BLE001 - said in one line, never a traceback
        return FleetView("fleet", [], problem=unreachable(exc), note=_note())
    if fresh and monitor.is_monitoring():
        mine = fleet.local_snapshot(_role(role))
        own = name_of(mine)
        kept = [p for p in processes if name_of(p) != own]
        published = next((p for p in processes if name_of(p) == own), None)
        if published is not None:
            mine["actions"] = published.get("actions", {})
            mine["role"] = published.get("role", mine["role"])
        processes = sorted([*kept, mine], key=lambda p: (p["host"], p["pid"]))
    return FleetView("fleet", processes, note=_note())


def _role(default: str) -> str:
    running = monitor.sampler()
    return running.role if running is not None else default


# -- totals ------------------------------------------------------------------------------------

_SUMMED = (
    "checked_out",
    "checked_in",
    "overflow",
    "waiting",
    "total",
    "capacity",
    "connects",
    "connect_errors",
    "checkouts",
    "timeouts",
    "invalidations",
    "leaks",
    "slow_queries",
    "queued",
)
_WORST_CIRCUIT = {"closed": 0, "half_open": 1, "open": 2}


def _distribution(found: list[dict[str, Any]]) -> dict[str, float | int]:
    return {
        "p50": max((d["p50"] for d in found), default=0.0),
        "p95": max((d["p95"] for d in found), default=0.0),
        "p99": max((d["p99"] for d in found), default=0.0),
        "max": max((d["max"] for d in found), default=0.0),
        "count": sum(int(d["count"]) for d in found),
    }


def _pool_total(seen: list[dict[str, Any]]) -> dict[str, Any]:
    first = seen[0]
    total: dict[str, Any] = dict(first)
    for key in _SUMMED:
        total[key] = sum(int(m.get(key, 0)) for m in seen)
    capacity = total["capacity"]
    total["utilization"] = min(total["checked_out"] / capacity, 1.0) if capacity else 0.0
    for key in ("acquire_wait_ms", "hold_ms", "connect_ms"):
        total[key] = _distribution([m[key] for m in seen])
    total["circuit_state"] = max(
        (m["circuit_state"] for m in seen), key=lambda s: _WORST_CIRCUIT.get(s, 0)
    )
    total["since"] = min((m["since"] for m in seen if m.get("since")), default="")
    total["peak_checked_out"] = max(int(m.get("peak_checked_out", 0)) for m in seen)
    total["processes"] = len(seen)
    return total


def pool_totals(
    processes: Iterable[dict[str, Any]], names: Sequence[str] | None = None
) -> dict[str, dict[str, Any]]:
    """``{pool: totals}`` over ``processes``, in ``names``' order (every pool seen without it).

    Each total has ``PoolMetrics.as_dict()``'s keys (configuration from the first process,
    gauges and counters summed, ``utilization`` of the sums, percentiles the highest of
    any process, ``peak_checked_out`` the highest of any process) and ``processes``.
    """
    per_pool: dict[str, list[dict[str, Any]]] = {}
    for process in processes:
        for name, metrics in process.get("pools", {}).items():
            per_pool.setdefault(name, []).append(metrics)
    order = list(names) if names is not None else list(per_pool)
    return {name: _pool_total(per_pool[name]) for name in order if name in per_pool}


def session_totals(processes: Iterable[dict[str, Any]]) -> dict[str, int]:
    """``get_session_stats()`` summed over ``processes``."""
    keys = (
        "total_sessions",
        "active_sessions",
        "committed_transactions",
        "transaction_rollbacks",
        "failed_sessions",
        "savepoints",
        "retries",
    )
    totals = dict.fromkeys(keys, 0)
    for process in processes:
        for key in keys:
            totals[key] += int(process.get("sessions", {}).get(key, 0))
    return totals


def transaction_totals(processes: Iterable[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """``get_transaction_stats()`` over ``processes``: counts added, means weighted."""
    found: dict[str, dict[str, float]] = {}
    for process in processes:
        for name, stats in (process.get("transactions") or {}).items():
            into = found.setdefault(name, {"count": 0, "failures": 0, "total_ms": 0.0, "max": 0.0})
            into["count"] += stats["count"]
            into["failures"] += stats["failures"]
            into["total_ms"] += stats["avg_ms"] * stats["count"]
            into["max"] = max(into["max"], stats["max_ms"])
    return {
        name: {
            "count": int(t["count"]),
            "failures": int(t["failures"]),
            "avg_ms": t["total_ms"] / t["count"] if t["count"] else 0.0,
            "max_ms": t["max"],
        }
        for name, t in found.items()
    }


def performance_totals(processes: list[dict[str, Any]]) -> dict[str, Any]:
    """``get_performance_metrics()``'s figures over ``processes``."""
    pools = [m for p in processes for m in p.get("pools", {}).values()]
    checkouts = sum(int(m["checkouts"]) for m in pools)
    errors = sum(int(m["connect_errors"]) + int(m["timeouts"]) for m in pools)
    waited_us = held_us = 0
    for process in processes:
        for times in (process.get("histograms") or {}).values():
            waited_us += int(times["wait_time"]["sum_us"])
            held_us += int(times["use_time"]["sum_us"])
    return {
        "total_checkouts": checkouts,
        "total_errors": errors,
        "error_rate": errors / checkouts if checkouts else 0.0,
        "average_checkout_time": waited_us / 1000.0 / checkouts if checkouts else 0.0,
        "average_hold_time": held_us / 1000.0 / checkouts if checkouts else 0.0,
        "slow_queries": sum(int(m["slow_queries"]) for m in pools),
        "leaks": sum(int(m["leaks"]) for m in pools),
        "sessions": session_totals(processes),
        "timestamp": dt.datetime.now(dt.UTC).isoformat(),
    }


# -- health from snapshots ---------------------------------------------------------------------


def pool_health(metrics: dict[str, Any]) -> tuple[str, str]:
    """A process's pool, as its last snapshot shows it: (status, detail)."""
    circuit = metrics.get("circuit_state", "closed")
    replica_of = metrics.get("replica_of")
    if replica_of and (
        circuit == "open" or metrics.get("replica_state") in ("lagging", "promoted", "unreachable")
    ):
        # Reads a replica cannot serve go to its primary: at worst degraded.
        why = "circuit breaker open" if circuit == "open" else metrics["replica_state"]
        return "degraded", f'replica {why}; reads go to the primary, pool "{replica_of}"'
    if circuit == "open":
        return "unhealthy", "circuit breaker open"
    if circuit == "half_open":
        return "degraded", "circuit breaker recovering"
    if metrics.get("waiting", 0) > 0 or (
        metrics.get("capacity") and metrics.get("utilization", 0.0) >= SATURATION
    ):
        return "degraded", "pool nearly saturated"
    return "healthy", "ok"


def fleet_health(
    processes: list[dict[str, Any]], names: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """Per pool: the worst status among the processes, a detail naming them, and each one's."""
    found: dict[str, dict[str, Any]] = {}
    for name in names:
        each = {name_of(p): pool_health(p["pools"][name]) for p in processes if name in p["pools"]}
        worst = max((s for s, _ in each.values()), key=_ORDER.__getitem__, default="healthy")
        detail = "ok"
        if worst != "healthy":
            details = sorted({d for s, d in each.values() if s == worst})
            who = sorted(n for n, (s, _) in each.items() if s == worst)
            shown = ", ".join(who[:3]) + (f" and {len(who) - 3} more" if len(who) > 3 else "")
            detail = f"{'; '.join(details)} in {len(who)} of {len(each)} process(es): {shown}"
        found[name] = {
            "status": worst,
            "detail": detail,
            "processes": {n: {"status": s, "detail": d} for n, (s, d) in each.items()},
        }
    return found


# -- actions -----------------------------------------------------------------------------------


@dataclass
class ActionReport:
    """A fleet action: what it was, whom it was for, and who applied it so far."""

    action: dict[str, Any]
    #: "fleet" or "local".
    source: str
    #: The live processes when it was issued.
    targets: list[str] = field(default_factory=list)
    #: This process's name when it is a member of the fleet (it applied the action at once).
    here: str | None = None
    problem: str | None = None
    note: str | None = None
    progress: dict[str, list[str]] = field(default_factory=dict)
    waited: float = 0.0


def run_action(
    do: Sequence[str], pools: Sequence[str] | None, *, local: bool = False
) -> ActionReport:
    """Issue an action to the fleet and apply it here at once (``local``: here only).

    When the cache cannot take it, it is applied here only and ``problem`` says why.
    """
    action = fleet.new_action(do, pools)
    running = monitor.sampler()
    here = running.member if running is not None else None
    report = ActionReport(action, "local" if local else "fleet", here=here)
    if not local:
        if running is not None:
            running.mark_seen(action["id"])  # its sampler must not apply it a second time
        report.note = _note()
        try:
            report.targets = [name_of(p) for p in fleet.get_fleet_metrics()]
            action["targets"] = report.targets
            fleet.issue(action)
        except Exception as exc:  # noqa: BLE001 - said in one line; applied here anyway
            report.problem = unreachable(exc)
            report.targets = []
    fleet.apply_action(action)
    if running is not None:
        running.note_applied(action["id"])
        if not local and report.problem is None:
            try:
                running.publish_now()
            except Exception:  # its next sample publishes it
                logger.warning("Could not publish at once after a fleet action", exc_info=True)
    applied = [here] if here is not None else []
    report.progress = {
        "applied": applied,
        "pending": [t for t in report.targets if t not in applied],
        "gone": [],
    }
    return report


def wait_for_action(report: ActionReport, timeout: float, *, poll: float = 0.1) -> ActionReport:
    """Follow ``report`` until every target applied it or left, or ``timeout`` passed."""
    if report.source != "fleet" or report.problem is not None:
        return report
    started = time.monotonic()
    while True:
        try:
            live = fleet.get_fleet_metrics()
        except Exception as exc:  # noqa: BLE001 - said in one line
            report.problem = unreachable(exc)
            break
        report.progress = fleet.action_progress(report.action["id"], report.targets, live)
        report.waited = time.monotonic() - started
        if not report.progress["pending"] or report.waited >= timeout:
            break
        time.sleep(min(poll, max(timeout - report.waited, 0.0)))
    return report


def fleet_actions(view: FleetView | None = None) -> list[dict[str, Any]]:
    """The fleet's recent actions, newest first, each with the processes that applied it,
    those still to (live processes it was issued to) and those gone; [] when unreadable.

    ``view``: the fleet as the caller just read it (read again without it).
    """
    view = view if view is not None else read_fleet()
    if view.source != "fleet" or view.problem is not None:
        return []
    try:
        listed = fleet.listed_actions(fleet.fleet_cache())
    except Exception:  # the fleet was readable a moment ago: show nothing rather than fail
        logger.warning("Could not read the fleet's actions", exc_info=True)
        return []
    found = []
    for action in reversed(listed):
        targets = action.get("targets") or []
        found.append({**action, **fleet.action_progress(action["id"], targets, view.processes)})
    return found
