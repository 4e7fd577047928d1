"""The JSON and Prometheus endpoints (``mingus_sessions.urls``).

``health/database`` is public and coarse: an overall status and one status per
pool, nothing that helps an attacker (no counts, no hosts, no error texts);
staff users and bearers of ``METRICS_TOKEN`` also get the detail. It answers
JSON whatever happens: invalid settings, or any other failure inside it, make
a 503 that names the problem (check ids, or the error's class). ``HEAD``
answers as ``GET`` does, without the body (load balancers probe with it). The metrics
and dashboard endpoints answer only staff users and token bearers: 401 without
credentials, 403 with wrong ones or for a user who is not staff. Nothing here
is cached, and no response carries a password or a bound parameter.
"""

from __future__ import annotations

import datetime as dt
import hmac
import logging
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_safe

from . import conf
from ._core.errors import ConfigurationError
from .metrics.api import (
    HEALTHY,
    UNHEALTHY,
    _failure_summary,
    check_all_pools,
    get_performance_metrics,
    get_pool_metrics,
    get_session_stats,
    get_transaction_stats,
    overall_status,
)
from .metrics.prometheus import CONTENT_TYPE, render_prometheus

__all__ = ["dashboard", "health", "metrics", "prometheus"]

logger = logging.getLogger("mingus_sessions")

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
@require_safe
def health(request: HttpRequest) -> JsonResponse:
    """200 when every pool is healthy, else 503; detail only for staff and token bearers.

    JSON whatever fails inside; ``HEAD`` gets GET's status and headers, no body.
    """
    try:
        body, status = _health(request)
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


def _health(request: HttpRequest) -> tuple[dict[str, Any], int]:
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
    return body, 200 if status == HEALTHY else 503


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
