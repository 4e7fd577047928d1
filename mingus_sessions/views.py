"""The JSON and Prometheus endpoints (``mingus_sessions.urls``).

``health/database`` is public and coarse: an overall status and one status per
pool, nothing that helps an attacker (no counts, no hosts, no error texts);
staff users and bearers of ``METRICS_TOKEN`` also get the detail. The metrics
and dashboard endpoints answer only staff users and token bearers: 401 without
credentials, 403 with wrong ones or for a user who is not staff. Nothing here
is cached, and no response carries a password or a bound parameter.
"""

from __future__ import annotations

import datetime as dt
import hmac
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from . import conf
from .metrics.api import (
    HEALTHY,
    check_all_pools,
    get_performance_metrics,
    get_pool_metrics,
    get_session_stats,
    get_transaction_stats,
    overall_status,
)
from .metrics.prometheus import CONTENT_TYPE, render_prometheus

__all__ = ["dashboard", "health", "metrics", "prometheus"]

#: Seconds the health endpoint waits for the databases before answering "unhealthy".
HEALTH_TIMEOUT = 3.0


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def _credentials(request: HttpRequest) -> bool | None:
    """True: staff or a valid token; False: credentials that do not allow it; None: none."""
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
    return bool(user.is_active and user.is_staff)


def _refused(allowed: bool | None) -> HttpResponse | None:
    if allowed:
        return None
    if allowed is None:
        response = JsonResponse({"error": "authentication required"}, status=401)
        response["WWW-Authenticate"] = 'Bearer realm="mingus_sessions"'
        return response
    return JsonResponse({"error": "forbidden"}, status=403)


@never_cache
@require_GET
def health(request: HttpRequest) -> JsonResponse:
    """200 when every pool is healthy, else 503; detail only for staff and token bearers."""
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
    return JsonResponse(body, status=200 if status == HEALTHY else 503)


@never_cache
@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    """Every pool's metrics, the process's performance figures and named transactions."""
    refused = _refused(_credentials(request))
    if refused is not None:
        return refused
    return JsonResponse(
        {
            "pool_metrics": {name: m.as_dict() for name, m in get_pool_metrics().items()},
            "performance_metrics": get_performance_metrics(),
            "transactions": get_transaction_stats(),
            "timestamp": _now(),
        }
    )


@never_cache
@require_GET
def prometheus(request: HttpRequest) -> HttpResponse:
    """The Prometheus text exposition of every pool and session metric."""
    refused = _refused(_credentials(request))
    if refused is not None:
        return refused
    return HttpResponse(render_prometheus(), content_type=CONTENT_TYPE)


@never_cache
@require_GET
def dashboard(request: HttpRequest) -> HttpResponse:
    """The seeds' dashboard KPIs, across pools, with each pool's health and gauges."""
    refused = _refused(_credentials(request))
    if refused is not None:
        return refused
    health_status = check_all_pools(timeout=HEALTH_TIMEOUT)
    pools = get_pool_metrics()
    performance = get_performance_metrics()
    total = sum(m.total for m in pools.values())
    active = sum(m.checked_out for m in pools.values())
    return JsonResponse(
        {
            "health_status": health_status,
            "kpis": {
                "total_connections": total,
                "active_connections": active,
                "connection_utilization": active / total if total else 0.0,
                "error_rate": performance["error_rate"],
                "average_checkout_time": performance["average_checkout_time"],
            },
            "pools": {
                name: {
                    "health": health_status.get(name, {}).get("status", "unknown"),
                    "metrics": {
                        "pool_size": m.pool_size,
                        "checked_out": m.checked_out,
                        "checked_in": m.checked_in,
                        "overflow": m.overflow,
                        "errors": m.connect_errors + m.timeouts,
                    },
                }
                for name, m in pools.items()
            },
            "timestamp": _now(),
        }
    )
