"""The public metrics functions (re-exported by :mod:`mingus_sessions.metrics`)."""

from __future__ import annotations

import datetime as dt
import threading
import time
from typing import Any, overload

from sqlalchemy.pool import QueuePool

from .. import conf
from .._core.errors import ConfigurationError
from .._core.recorder import PoolRecorder
from .._core.snapshot import PoolMetrics, snapshot
from .._core.state import state
from ..breakers import get_circuit_breaker
from ..engines import get_entry, pool_names
from ..fleet import reset_local_metrics
from ._reasons import unreachable_detail

__all__ = [
    "check_all_pools",
    "check_pool",
    "get_performance_metrics",
    "get_pool_metrics",
    "get_session_stats",
    "get_transaction_stats",
    "overall_status",
    "reset_metrics",
]

HEALTHY = "healthy"
DEGRADED = "degraded"
UNHEALTHY = "unhealthy"
#: Utilization at or above which a reachable pool is "degraded".
SATURATION = 0.9
#: Seconds a health check waits for a database answer by default.
DEFAULT_HEALTH_TIMEOUT = 5.0
#: How the detail of a pool whose own connection settings fail to connect begins.
MISCONFIGURED = "misconfigured"


@overload
def get_pool_metrics(pool: None = None) -> dict[str, PoolMetrics]: ...


@overload
def get_pool_metrics(pool: str) -> PoolMetrics: ...


def get_pool_metrics(pool: str | None = None) -> PoolMetrics | dict[str, PoolMetrics]:
    """``{name: PoolMetrics}`` for every configured pool, or one pool's ``PoolMetrics``."""
    if pool is not None:
        return _pool_metrics(pool)
    return {name: _pool_metrics(name) for name in pool_names()}


def _pool_metrics(name: str) -> PoolMetrics:
    entry = get_entry(name)
    return snapshot(entry, get_circuit_breaker(entry.name).state)


def get_session_stats() -> dict[str, int]:
    """Sessions and transactions in this process (see docs/metrics.md)."""
    return state.sessions.snapshot()


def get_transaction_stats() -> dict[str, dict[str, float]]:
    """``{name: {"count", "failures", "avg_ms", "max_ms"}}`` of named transactions."""
    return state.transactions.snapshot()


def get_performance_metrics() -> dict[str, Any]:
    """Process-wide figures across pools: checkouts, errors, mean checkout and hold times."""
    pools = get_pool_metrics()
    checkouts = sum(m.checkouts for m in pools.values())
    errors = sum(m.connect_errors + m.timeouts for m in pools.values())
    waited = 0.0
    held = 0.0
    for name in pools:
        probe = get_entry(name).probe
        if isinstance(probe, PoolRecorder) and probe.acquire is not None:
            waited += probe.acquire.sum_us / 1000.0
            held += probe.hold.sum_us / 1000.0
    return {
        "total_checkouts": checkouts,
        "total_errors": errors,
        "error_rate": errors / checkouts if checkouts else 0.0,
        "average_checkout_time": waited / checkouts if checkouts else 0.0,
        "average_hold_time": held / checkouts if checkouts else 0.0,
        "slow_queries": sum(m.slow_queries for m in pools.values()),
        "leaks": sum(m.leaks for m in pools.values()),
        "sessions": get_session_stats(),
        "timestamp": dt.datetime.now(dt.UTC).isoformat(),
    }


def reset_metrics(pool: str | None = None) -> None:
    """Zero this process's counters and distributions of ``pool``, or of every pool and the
    sessions (``manage.py pool_reset`` and the admin reach every process of the fleet)."""
    reset_local_metrics(pool)


# -- health ----------------------------------------------------------------------------------


class _Ping:
    """``SELECT 1`` on a pool in a daemon thread, so a hung database cannot hang the caller."""

    def __init__(self, name: str) -> None:
        self.error: str | None = None
        self.done = threading.Event()
        self.thread = threading.Thread(
            target=self._run, args=(name,), daemon=True, name=f"mingus-health-{name}"
        )

    def _run(self, name: str) -> None:
        recorder: PoolRecorder | None = None
        try:
            entry = get_entry(name)
            if isinstance(entry.probe, PoolRecorder):
                # The ping's checkout is not traffic: the recorder leaves it uncounted.
                recorder = entry.probe
                recorder.health_thread = threading.get_ident()
            with entry.engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
        except ConfigurationError as exc:
            # The pool's connection settings, not the database: its message
            # names the setting to fix (and never a password).
            self.error = f"{MISCONFIGURED}: {exc}"
        except (TypeError, ValueError) as exc:
            # A driver refusing the connect() arguments themselves.
            self.error = (
                f"{MISCONFIGURED} ({type(exc).__name__} from the driver's connect()): check the "
                "pool's DATABASES OPTIONS and CONNECT_ARGS"
            )
        except Exception as exc:  # noqa: BLE001 - any other failure means unreachable
            self.error = unreachable_detail(exc)
        finally:
            if recorder is not None:
                recorder.health_thread = 0
            self.done.set()


def _ping_running(name: str) -> bool:
    running = state.health_pings.get(name)
    return running is not None and not running.done.is_set()


def _start_ping(name: str) -> _Ping | None:
    """A new ping, or None while the previous one of this pool has not answered."""
    with state.lock:
        running = state.health_pings.get(name)
        if running is not None and not running.done.is_set():
            return None
        ping = state.health_pings[name] = _Ping(name)
    ping.thread.start()
    return ping


def check_pool(
    pool: str | None = None, *, timeout: float = DEFAULT_HEALTH_TIMEOUT
) -> dict[str, Any]:
    """``{"status", "detail", ...}`` of one pool, answered within ``timeout`` seconds."""
    return check_all_pools(timeout=timeout, pools=[get_entry(pool).name])[get_entry(pool).name]


def check_all_pools(
    timeout: float = DEFAULT_HEALTH_TIMEOUT, pools: list[str] | None = None
) -> dict[str, dict[str, Any]]:
    """The health of every configured pool (or of ``pools``), all within ``timeout`` seconds.

    Never waits for a pool's own timeout: an open breaker is unhealthy with no
    connection attempt, a pool with every connection in use is degraded without
    queueing, and a database that does not answer in time is unhealthy while
    its ping finishes in the background (one ping per pool at a time).
    """
    deadline = time.monotonic() + timeout
    results: dict[str, dict[str, Any]] = {}
    pending: dict[str, tuple[_Ping, PoolMetrics, dict[str, Any]]] = {}
    for name in pools if pools is not None else pool_names():
        try:
            entry = get_entry(name)
            metrics = snapshot(entry, get_circuit_breaker(name).state)
        except Exception as exc:  # noqa: BLE001 - e.g. a missing driver: report, do not raise
            results[name] = {
                "status": UNHEALTHY,
                "detail": f"unusable ({type(exc).__name__})",
                "utilization": 0.0,
                "circuit_state": "closed",
            }
            continue
        base = {
            "utilization": round(metrics.utilization, 3),
            "circuit_state": metrics.circuit_state,
        }
        if metrics.circuit_state == "open":
            results[name] = {"status": UNHEALTHY, "detail": "circuit breaker open", **base}
            continue
        if _ping_running(name):
            # A ping that has not answered may itself hold the pool's last slot.
            results[name] = {
                "status": UNHEALTHY,
                "detail": "the previous check has not answered yet",
                **base,
            }
            continue
        pool = entry.engine.pool
        exhausted = (
            isinstance(pool, QueuePool)
            and metrics.checked_in == 0
            and metrics.overflow >= metrics.max_overflow
            # The pool's own count: connections still out of a pool disposed
            # since are counted in checked_out, but take no slot of this one.
            and pool.checkedout() >= metrics.pool_size
        )
        if exhausted:
            results[name] = {"status": DEGRADED, "detail": "every connection is in use", **base}
            continue
        ping = _start_ping(name)
        if ping is None:
            results[name] = {
                "status": UNHEALTHY,
                "detail": "the previous check has not answered yet",
                **base,
            }
            continue
        pending[name] = (ping, metrics, base)
    for name, (ping, metrics, base) in pending.items():
        answered = ping.done.wait(max(deadline - time.monotonic(), 0.0))
        if not answered:
            results[name] = {
                "status": UNHEALTHY,
                "detail": f"unreachable: timed out (no answer within {timeout:g} s)",
                **base,
            }
        elif ping.error is not None:
            results[name] = {"status": UNHEALTHY, "detail": ping.error, **base}
        elif metrics.utilization >= SATURATION or metrics.waiting > 0:
            results[name] = {"status": DEGRADED, "detail": "pool nearly saturated", **base}
        elif metrics.circuit_state == "half_open":
            results[name] = {"status": DEGRADED, "detail": "circuit breaker recovering", **base}
        else:
            results[name] = {"status": HEALTHY, "detail": "ok", **base}
    for name, result in results.items():
        _as_a_replica(name, result)
    return results


def _as_a_replica(name: str, result: dict[str, Any]) -> None:
    """A replica's pool is at worst degraded: reads it cannot serve go to its primary."""
    config = conf.get_config().pools.get(name)
    if config is None or config.replica_of is None:
        return
    metrics = snapshot(get_entry(name), get_circuit_breaker(name).state)
    result["replica_of"] = metrics.replica_of
    result["replica_state"] = metrics.replica_state
    result["replica_lag"] = metrics.replica_lag
    primary = f'reads go to the primary, pool "{config.replica_of}"'
    if result["status"] == UNHEALTHY:
        result["status"] = DEGRADED
        result["detail"] = f"replica {result['detail']}; {primary}"
    elif metrics.replica_state in ("lagging", "promoted", "unreachable"):
        result["status"] = DEGRADED
        lag = "" if metrics.replica_lag is None else f", {metrics.replica_lag:g} s behind"
        result["detail"] = f"replica {metrics.replica_state}{lag}; {primary}"


def overall_status(results: dict[str, dict[str, Any]]) -> str:
    """The worst status among ``results``."""
    order = {HEALTHY: 0, DEGRADED: 1, UNHEALTHY: 2}
    worst = max((order[r["status"]] for r in results.values()), default=0)
    return [HEALTHY, DEGRADED, UNHEALTHY][worst]


def _failure_summary(exc: BaseException) -> str:
    """What made a health check fail, fit for a public answer.

    Invalid settings are named by their system-check ids; anything else by the
    error's class. Never the error's text: a settings message quotes the value
    it refuses, and a misplaced value may be a secret.
    """
    if not isinstance(exc, ConfigurationError):
        return f"the health check failed ({type(exc).__name__})"
    try:
        ids = sorted({problem.id for problem in conf.problems()})
    except Exception:  # noqa: BLE001 - settings too broken to list: the class says enough
        ids = []
    if not ids:
        return f"invalid settings ({type(exc).__name__})"
    return f"invalid settings ({', '.join(ids)}): run manage.py check"
