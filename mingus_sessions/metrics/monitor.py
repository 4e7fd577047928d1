"""The monitoring sampler's functions, where ``docs/metrics.md`` has always imported them.

The sampler is part of the glue (:mod:`mingus_sessions.monitor`), since the middleware and
the Celery base class start it; this module keeps its documented path.
"""

from __future__ import annotations

from ..monitor import (
    get_fleet_metrics,
    get_time_series,
    is_monitoring,
    start_monitoring,
    stop_monitoring,
)

__all__ = [
    "get_fleet_metrics",
    "get_time_series",
    "is_monitoring",
    "start_monitoring",
    "stop_monitoring",
]
