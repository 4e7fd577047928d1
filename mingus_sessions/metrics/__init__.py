"""Pool and session metrics, health, monitoring, the fleet view and sizing advice.

The functions are imported lazily (PEP 562): importing this package (as the
middleware does for the sampler) loads none of the reporting modules.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .._core.histogram import Percentiles
    from .advice import advise_pools
    from .api import (
        check_all_pools,
        get_performance_metrics,
        get_pool_metrics,
        get_session_stats,
        get_transaction_stats,
        reset_metrics,
    )
    from .monitor import get_fleet_metrics, start_monitoring, stop_monitoring
    from .prometheus import render_prometheus
    from .snapshot import PoolMetrics

_WHERE = {
    "advise_pools": ".advice",
    "check_all_pools": ".api",
    "get_performance_metrics": ".api",
    "get_pool_metrics": ".api",
    "get_session_stats": ".api",
    "get_transaction_stats": ".api",
    "reset_metrics": ".api",
    "Percentiles": "mingus_sessions._core.histogram",
    "get_fleet_metrics": ".monitor",
    "start_monitoring": ".monitor",
    "stop_monitoring": ".monitor",
    "render_prometheus": ".prometheus",
    "PoolMetrics": ".snapshot",
}

__all__ = [
    "Percentiles",
    "PoolMetrics",
    "advise_pools",
    "check_all_pools",
    "get_fleet_metrics",
    "get_performance_metrics",
    "get_pool_metrics",
    "get_session_stats",
    "get_transaction_stats",
    "render_prometheus",
    "reset_metrics",
    "start_monitoring",
    "stop_monitoring",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)
