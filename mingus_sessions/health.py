"""A django-health-check 4.x check for one pool: :class:`PoolHealthCheck`.

Use it in ``HealthCheckView.as_view(checks=[...])``, which takes each check as
a class (or dotted path) and its keyword arguments::

    path("ht/", HealthCheckView.as_view(checks=[
        (PoolHealthCheck, {"pool": "main"}),
        ("mingus_sessions.health.PoolHealthCheck", {"pool": "analytics"}),
    ]))

The check answers within its ``timeout`` even when the database hangs or the
pool is exhausted (it never queues for a connection): ``degraded`` raises
``ServiceWarning``, ``unhealthy`` raises ``ServiceUnavailable``, and so does a
check that cannot run (invalid settings, named by their check ids). Needs the
``health`` extra (``django-health-check>=4,<5``).
"""

from __future__ import annotations

import dataclasses
import datetime
import logging

from health_check.base import HealthCheck
from health_check.exceptions import ServiceUnavailable, ServiceWarning

from ._core.errors import ConfigurationError
from .metrics.api import DEGRADED, UNHEALTHY, _failure_summary, check_pool

__all__ = ["PoolHealthCheck"]

logger = logging.getLogger("mingus_sessions")


@dataclasses.dataclass
class PoolHealthCheck(HealthCheck):  # type: ignore[misc]
    """Healthy, degraded (warning) or unhealthy (unavailable) for one pool."""

    pool: str = "main"
    timeout: datetime.timedelta = dataclasses.field(
        default=datetime.timedelta(seconds=3), repr=False
    )

    def run(self) -> None:
        try:
            result = check_pool(self.pool, timeout=self.timeout.total_seconds())
        except Exception as exc:
            # django-health-check would answer "unknown error"; say what it is
            # (without the error's text, which may quote a secret setting).
            if isinstance(exc, ConfigurationError):
                logger.error("PoolHealthCheck(%r): the settings are invalid: %s", self.pool, exc)
            else:
                logger.exception("PoolHealthCheck(%r) failed", self.pool)
            raise ServiceUnavailable(f"pool {self.pool}: {_failure_summary(exc)}") from exc
        if result["status"] == UNHEALTHY:
            raise ServiceUnavailable(f"pool {self.pool}: {result['detail']}")
        if result["status"] == DEGRADED:
            raise ServiceWarning(f"pool {self.pool}: {result['detail']}")
