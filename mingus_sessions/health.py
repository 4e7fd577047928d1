"""A django-health-check 4.x check for one pool: :class:`PoolHealthCheck`.

Use it in ``HealthCheckView.as_view(checks=[...])``, which takes each check as
a class (or dotted path) and its keyword arguments::

    path("ht/", HealthCheckView.as_view(checks=[
        (PoolHealthCheck, {"pool": "main"}),
        ("mingus_sessions.health.PoolHealthCheck", {"pool": "analytics"}),
    ]))

The check answers within its ``timeout`` even when the database hangs or the
pool is exhausted (it never queues for a connection): ``degraded`` raises
``ServiceWarning``, ``unhealthy`` raises ``ServiceUnavailable``. Needs the
``health`` extra (``django-health-check>=4,<5``).
"""

from __future__ import annotations

import dataclasses
import datetime

from health_check.base import HealthCheck
from health_check.exceptions import ServiceUnavailable, ServiceWarning

from .metrics.api import DEGRADED, UNHEALTHY, check_pool

__all__ = ["PoolHealthCheck"]


@dataclasses.dataclass
class PoolHealthCheck(HealthCheck):  # type: ignore[misc]
    """Healthy, degraded (warning) or unhealthy (unavailable) for one pool."""

    pool: str = "main"
    timeout: datetime.timedelta = dataclasses.field(
        default=datetime.timedelta(seconds=3), repr=False
    )

    def run(self) -> None:
        result = check_pool(self.pool, timeout=self.timeout.total_seconds())
        if result["status"] == UNHEALTHY:
            raise ServiceUnavailable(f"pool {self.pool}: {result['detail']}")
        if result["status"] == DEGRADED:
            raise ServiceWarning(f"pool {self.pool}: {result['detail']}")
