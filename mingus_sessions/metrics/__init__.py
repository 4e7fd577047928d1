"""Pool and session metrics, health, the monitoring sampler, the fleet view and sizing advice."""

from __future__ import annotations

from .._core.histogram import Percentiles
from .._core.snapshot import PoolMetrics
from ..monitor import get_fleet_metrics, start_monitoring, stop_monitoring
from .advice import advise_pools
from .api import (
    check_all_pools,
    get_performance_metrics,
    get_pool_metrics,
    get_session_stats,
    get_transaction_stats,
    reset_metrics,
)
from .prometheus import render_prometheus

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
