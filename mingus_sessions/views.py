"""The JSON and Prometheus endpoints (``mingus_sessions.urls``).

``health/database`` is public and coarse: an overall status and one status per
pool, nothing that helps an attacker (no counts, no hosts, no error texts);
callers allowed to read the metrics also get the detail. It answers 200 when
the process's pools are healthy or degraded (a busy process must stay in its
load balancer) and 503 when one is unhealthy, or with ``?strict=1`` degraded
too. It answers JSON whatever happens: invalid settings, or any other failure
inside it, make a 503 that names the problem (check ids, or the error's class).
``HEAD`` answers as ``GET`` does, without the body (load balancers probe with it).

The metrics and dashboard endpoints show every live process of the fleet (from
the ``FLEET`` cache), whichever worker answers; ``?local=1`` shows the answering
process alone. When the cache cannot be read they answer 503 with one line that
says so. They answer bearers of ``METRICS_TOKEN`` and staff users with the
admin's permission ``mingus_sessions.view_connectionpool`` (or its change
permission, which implies it): 401 without credentials, 403 with wrong ones.
Nothing here is cached, and no response carries a password or a bound parameter.
"""

from __future__ import annotations

import datetime as dt
import hmac
import logging
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_safe

from . import conf, monitor
from ._core.errors import ConfigurationError
from .engines import pool_names
from .metrics._fleet import (
    FleetView,
    fleet_actions,
    fleet_health,
    performance_totals,
    pool_totals,
    read_fleet,
    transaction_totals,
)
from .metrics.api import (
    DEGRADED,
    HEALTHY,
    UNHEALTHY,
    _failure_summary,
    check_all_pools,
    get_session_stats,
    overall_status,
)
from .metrics.prometheus import CONTENT_TYPE, render_prometheus

__all__ = ["dashboard", "health", "metrics", "prometheus"]

logger = logging.getLogger("mingus_sessions")

#: Seconds the health endpoint waits for the databases before answering "unhealthy".
HEALTH_TIMEOUT = 3.0
#: The permissions that let a staff user read the metrics (as they open the admin's pages).
PERMISSIONS = ("mingus_sessions.view_connectionpool", "mingus_sessions.change_connectionpool")
_YES = ("1", "true", "yes", "on")
_NO = ("", "0", "false", "no", "off")


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def _credentials(request: HttpRequest) -> bool | None:
    """True: a valid token, or an active staff user with the admin's view permission;
    False: credentials that do not allow it; None: none."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        expected = conf.get_config().metrics_token
        return expected is not None and hmac.compare_digest(
            token.strip().encode(), expected.encode()
        )
    # Any other scheme (Basic auth a proxy passes on, say) is not ours to judge:
    # the logged-in user decides.
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return None
    if not (user.is_active and user.is_staff):
        return False
    return any(user.has_perm(permission) for permission in PERMISSIONS)


def _refused(allowed: bool | None) -> HttpResponse | None:
    if allowed:
        return None
    if allowed is None:
        response = JsonResponse({"error": "authentication required"}, status=401)
        response["WWW-Authenticate"] = 'Bearer realm="mingus_sessions"'
        return response
    return JsonResponse({"error": "forbidden"}, status=403)


def _flag(request: HttpRequest, name: str) -> bool | None:
    """A yes/no query parameter; None when its value is neither."""
    value = request.GET.get(name, "").strip().lower()
    if value in _YES:
        return True
    if value in _NO:
        return False
    return None


def _fleet(request: HttpRequest) -> FleetView | HttpResponse:
    """The processes to show (every live one, or ``?local=1`` this one), or the 4xx/503."""
    local = _flag(request, "local")
    if local is None:
        return JsonResponse({"error": "local must be 1 or 0"}, status=400)
    if not conf.get_config().monitoring:
        # No process publishes: the answering one is all there is to show.
        view = read_fleet(local=True, role="web")
        view.note = "MONITORING is off: the answering process alone"
        return view
    # The answering process is a web process: it belongs in the fleet it shows.
    monitor.ensure_monitoring("web")
    return read_fleet(local=local, role="web", fresh=True)


def _unreachable(view: FleetView) -> JsonResponse:
    return JsonResponse(
        {"error": f"{view.problem}; ?local=1 shows the answering process", "timestamp": _now()},
        status=503,
    )


def _fleet_info(view: FleetView) -> dict[str, Any]:
    info: dict[str, Any] = {"source": view.source, "processes": len(view.processes)}
    if view.note:
        info["note"] = view.note
    return info


@never_cache
@require_safe
def health(request: HttpRequest) -> JsonResponse:
    """200 healthy or degraded (``?strict=1``: healthy only), 503 otherwise; detail only for
    callers allowed to read the metrics.

    JSON whatever fails inside; ``HEAD`` gets GET's status and headers, no body.
    """
    strict = _flag(request, "strict")
    if strict is None:
        body, status = {"error": "strict must be 1 or 0", "timestamp": _now()}, 400
    else:
        try:
            body, status = _health(request, strict=strict)
        except Exception as exc:  # noqa: BLE001 - logged, and answered as unhealthy
            body, status = _health_failed(exc), 503
    response = JsonResponse(body, status=status)
    # The same header on GET and HEAD: the length of GET's body (RFC 9110
    # lets HEAD carry it), so a probe sees exactly what GET would send.
    response["Content-Length"] = str(len(response.content))
    if request.method == "HEAD":
        # Servers drop HEAD bodies too, but not every one: send none.
        response.content = b""
    return response


def _health(request: HttpRequest, *, strict: bool) -> tuple[dict[str, Any], int]:
    results = check_all_pools(timeout=HEALTH_TIMEOUT)
    status = overall_status(results)
    detailed = bool(_credentials(request))
    pools: dict[str, Any] = {
        name: (result if detailed else {"status": result["status"]})
        for name, result in results.items()
    }
    session_manager: dict[str, Any] = {"status": status}
    if detailed:
        session_manager["sessions"] = get_session_stats()
    body = {
        "status": status,
        "session_manager": session_manager,
        "connection_pools": pools,
        "timestamp": _now(),
    }
    # A busy (degraded) process still serves: taking it out of the load balancer
    # would move its load onto the others. ?strict=1 is for those who want that.
    failing = (UNHEALTHY, DEGRADED) if strict else (UNHEALTHY,)
    return body, 503 if status in failing else 200


def _health_failed(exc: Exception) -> dict[str, Any]:
    """The seeds' shape for a check that could not run, with ``error`` naming why.

    The same for everyone: with the settings broken, a token cannot be checked.
    The full text goes to the log.
    """
    if isinstance(exc, ConfigurationError):
        logger.error("health/database: the settings are invalid: %s", exc)
    else:
        logger.exception("health/database: the health check failed")
    return {
        "status": UNHEALTHY,
        "session_manager": {"status": UNHEALTHY},
        "connection_pools": {},
        "error": _failure_summary(exc),
        "timestamp": _now(),
    }


@never_cache
@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    """Every pool's metrics across the fleet, each process's, performance and transactions."""
    refused = _refused(_credentials(request))
    if refused is not None:
        return refused
    view = _fleet(request)
    if isinstance(view, HttpResponse):
        return view
    if view.problem is not None:
        return _unreachable(view)
    return JsonResponse(
        {
            "pool_metrics": pool_totals(view.processes, pool_names()),
            "performance_metrics": performance_totals(view.processes),
            "transactions": transaction_totals(view.processes),
            "processes": [_process(p) for p in view.processes],
            "fleet": _fleet_info(view),
            "timestamp": _now(),
        }
    )


def _process(process: dict[str, Any]) -> dict[str, Any]:
    """A process as the JSON endpoints list it: ``get_fleet_metrics()``'s main keys."""
    keys = ("host", "pid", "role", "updated_at", "pools", "sessions", "transactions", "actions")
    return {key: process.get(key) for key in keys}


@never_cache
@require_GET
def prometheus(request: HttpRequest) -> HttpResponse:
    """The Prometheus text exposition of every live process of the fleet."""
    refused = _refused(_credentials(request))
    if refused is not None:
        return refused
    view = _fleet(request)
    if isinstance(view, HttpResponse):
        return view
    if view.problem is not None:
        # A scrape that cannot see the fleet fails (Prometheus' up == 0) rather than
        # export one process as if it were the deployment.
        return HttpResponse(
            f"{view.problem}; ?local=1 exports the answering process\n",
            status=503,
            content_type="text/plain; charset=utf-8",
        )
    return HttpResponse(render_prometheus(view.processes), content_type=CONTENT_TYPE)


@never_cache
@require_GET
def dashboard(request: HttpRequest) -> HttpResponse:
    """The seeds' dashboard KPIs across the fleet, with each pool's health and gauges.

    A pool's health is the worst of this process's check (can it reach the database
    now?) and every process's last sample (breaker, saturation).
    """
    refused = _refused(_credentials(request))
    if refused is not None:
        return refused
    view = _fleet(request)
    if isinstance(view, HttpResponse):
        return view
    if view.problem is not None:
        return _unreachable(view)
    names = pool_names()
    health_status = _combined_health(check_all_pools(timeout=HEALTH_TIMEOUT), view, names)
    pools = pool_totals(view.processes, names)
    performance = performance_totals(view.processes)
    total = sum(m["total"] for m in pools.values())
    active = sum(m["checked_out"] for m in pools.values())
    return JsonResponse(
        {
            "health_status": health_status,
            "kpis": {
                "total_connections": total,
                "active_connections": active,
                "connection_utilization": round(active / total, 4) if total else 0.0,
                "error_rate": performance["error_rate"],
                "average_checkout_time": performance["average_checkout_time"],
            },
            "pools": {
                name: {
                    "health": health_status.get(name, {}).get("status", "unknown"),
                    "processes": m["processes"],
                    "metrics": {
                        "pool_size": m["pool_size"],
                        "checked_out": m["checked_out"],
                        "checked_in": m["checked_in"],
                        "overflow": m["overflow"],
                        "errors": m["connect_errors"] + m["timeouts"],
                    },
                }
                for name, m in pools.items()
            },
            "fleet": _fleet_info(view),
            "actions": fleet_actions(view),
            "timestamp": _now(),
        }
    )


def _combined_health(
    here: dict[str, dict[str, Any]], view: FleetView, names: tuple[str, ...]
) -> dict[str, dict[str, Any]]:
    """This process's check of each pool, made worse by what the fleet's samples show."""
    order = {HEALTHY: 0, DEGRADED: 1, UNHEALTHY: 2}
    fleet = fleet_health(view.processes, names)
    combined: dict[str, dict[str, Any]] = {}
    for name, result in here.items():
        seen = fleet.get(name)
        if seen is not None and order[seen["status"]] > order[result["status"]]:
            result = {**result, "status": seen["status"], "detail": f"fleet: {seen['detail']}"}
        combined[name] = result
    return combined
