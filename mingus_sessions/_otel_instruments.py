"""The OpenTelemetry instruments of the database client conventions, one set per meter provider.

The three connection times and ``db.client.operation.duration`` are
histograms, recorded as things happen (:class:`~mingus_sessions.otel.PoolTelemetry`);
the gauges are observable instruments, read from the pools' snapshots (the
``PoolMetrics`` the other surfaces show) when a reader collects. One set per
provider and process, kept in the registry: an instrument cannot be taken back
from a provider, so settings changes and test resets keep it, and its
callbacks report the pools built since (those whose telemetry uses it).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from opentelemetry.metrics import CallbackOptions, Observation

from ._core.histogram import FIXED_BOUNDS_US
from ._core.snapshot import PoolMetrics, snapshot
from ._core.state import state


class PoolTelemetry(Protocol):
    """A pool's telemetry (``otel.PoolTelemetry``), as its instruments read it."""

    pool_attributes: dict[str, Any]
    old_pool_attributes: dict[str, Any]
    instruments: Any


__all__ = ["OPERATION_BOUNDARIES", "Instruments", "instruments_for"]

#: OpenTelemetry's advisory boundaries for database client durations, in seconds
#: (the Prometheus output's too: ``_core/histogram.FIXED_BOUNDS_US``).
OPERATION_BOUNDARIES = tuple(bound / 1_000_000 for bound in FIXED_BOUNDS_US)
#: The same in milliseconds, for the experimental conventions' times.
_BOUNDARIES_MS = tuple(bound / 1_000 for bound in FIXED_BOUNDS_US)
#: How long one set of snapshots serves the gauges' callbacks of one collection.
_SNAPSHOT_TTL = 0.5


def instruments_for(meter_provider: Any, *, old: bool) -> Instruments:
    """The instruments on ``meter_provider``, created on first use in this process."""
    with state.lock:
        for provider, with_old, found in state.otel_instruments:
            if provider is meter_provider and with_old is old:
                return found  # type: ignore[no-any-return]
        meter = meter_provider.get_meter("mingus_sessions")
        made = Instruments(meter, old=old)
        state.otel_instruments.append((meter_provider, old, made))
        return made


class Instruments:
    """The nine pool instruments and ``db.client.operation.duration`` on one meter."""

    def __init__(self, meter: Any, *, old: bool) -> None:
        self.old = old
        self._taken = 0.0
        self._snapshots: list[tuple[PoolTelemetry, PoolMetrics]] = []
        self.operation_duration = meter.create_histogram(
            "db.client.operation.duration",
            unit="s",
            description="Duration of database client operations.",
            explicit_bucket_boundaries_advisory=OPERATION_BOUNDARIES,
        )
        self.create_time = self._times(meter, "db.client.connection.create_time", "s")
        self.wait_time = self._times(meter, "db.client.connection.wait_time", "s")
        self.use_time = self._times(meter, "db.client.connection.use_time", "s")
        self._gauges(meter, "db.client.connection", self._observe)
        if old:
            # Semantic conventions 1.24, for OTEL_SEMCONV_STABILITY_OPT_IN=database/dup.
            self.old_create_time = self._times(meter, "db.client.connections.create_time", "ms")
            self.old_wait_time = self._times(meter, "db.client.connections.wait_time", "ms")
            self.old_use_time = self._times(meter, "db.client.connections.use_time", "ms")
            self._gauges(meter, "db.client.connections", self._observe_old)

    @staticmethod
    def _times(meter: Any, name: str, unit: str) -> Any:
        what = {
            "create_time": "The time it took to create a new connection.",
            "wait_time": "The time it took to obtain an open connection from the pool.",
            "use_time": "The time between borrowing a connection and returning it to the pool.",
        }[name.rsplit(".", 1)[1]]
        return meter.create_histogram(
            name,
            unit=unit,
            description=what,
            explicit_bucket_boundaries_advisory=OPERATION_BOUNDARIES
            if unit == "s"
            else _BOUNDARIES_MS,
        )

    def _gauges(self, meter: Any, prefix: str, observe: Callable[[str], list[Observation]]) -> None:
        count = "usage" if prefix.endswith("connections") else "count"
        for suffix, kind, unit, description in (
            (
                count,
                "updown",
                "{connection}",
                "The number of connections that are currently in the state described by the "
                "state attribute.",
            ),
            (
                "idle.max",
                "updown",
                "{connection}",
                "The maximum number of idle open connections allowed.",
            ),
            (
                "idle.min",
                "updown",
                "{connection}",
                "The minimum number of idle open connections allowed.",
            ),
            ("max", "updown", "{connection}", "The maximum number of open connections allowed."),
            (
                "pending_requests",
                "updown",
                "{request}",
                "The number of current pending requests for an open connection.",
            ),
            (
                "timeouts",
                "counter",
                "{timeout}",
                "The number of connection timeouts that have occurred trying to obtain a "
                "connection from the pool.",
            ),
        ):
            create = (
                meter.create_observable_up_down_counter
                if kind == "updown"
                else meter.create_observable_counter
            )

            def callback(options: CallbackOptions, _which: str = suffix) -> Iterable[Observation]:
                return observe(_which)

            create(f"{prefix}.{suffix}", callbacks=[callback], unit=unit, description=description)

    # -- the histograms, as things happen ---------------------------------------------------

    def created(self, seconds: float, pool: PoolTelemetry) -> None:
        self.create_time.record(seconds, pool.pool_attributes)
        if self.old:
            self.old_create_time.record(seconds * 1000.0, pool.old_pool_attributes)

    def waited(self, seconds: float, pool: PoolTelemetry) -> None:
        self.wait_time.record(seconds, pool.pool_attributes)
        if self.old:
            self.old_wait_time.record(seconds * 1000.0, pool.old_pool_attributes)

    def used(self, seconds: float, pool: PoolTelemetry) -> None:
        self.use_time.record(seconds, pool.pool_attributes)
        if self.old:
            self.old_use_time.record(seconds * 1000.0, pool.old_pool_attributes)

    # -- the gauges, when a reader collects ---------------------------------------------------

    def _pools(self) -> list[tuple[PoolTelemetry, PoolMetrics]]:
        """The snapshots of the pools reporting here; one set serves one collection's callbacks."""
        now = time.monotonic()
        if now - self._taken > _SNAPSHOT_TTL:
            taken = []
            for entry in list(state.pools.values()):
                telemetry = entry.telemetry
                if telemetry is not None and telemetry.instruments is self:
                    taken.append((telemetry, snapshot(entry, "")))  # type: ignore[arg-type]
            self._snapshots, self._taken = taken, now
        return self._snapshots

    def _observe(self, which: str) -> list[Observation]:
        found = []
        for pool, metrics in self._pools():
            attributes = pool.pool_attributes
            if which == "count":
                found.append(
                    Observation(
                        metrics.checked_out, {**attributes, "db.client.connection.state": "used"}
                    )
                )
                found.append(
                    Observation(
                        metrics.checked_in, {**attributes, "db.client.connection.state": "idle"}
                    )
                )
            else:
                value = _gauge(which, metrics)
                if value is not None:
                    found.append(Observation(value, attributes))
        return found

    def _observe_old(self, which: str) -> list[Observation]:
        found = []
        for pool, metrics in self._pools():
            attributes = pool.old_pool_attributes
            if which == "usage":
                found.append(Observation(metrics.checked_out, {**attributes, "state": "used"}))
                found.append(Observation(metrics.checked_in, {**attributes, "state": "idle"}))
            else:
                value = _gauge(which, metrics)
                if value is not None:
                    found.append(Observation(value, attributes))
        return found


def _gauge(which: str, metrics: PoolMetrics) -> int | None:
    """One gauge of one pool; ``None`` where the pool class has no such limit.

    Only a queue pool keeps idle connections (up to its size) and has a maximum
    (size + overflow); SQLAlchemy keeps no minimum of idle connections.
    """
    queue = metrics.capacity > 0
    if which == "idle.max":
        # Per engine of the pool (the sync one, one per event loop using it), as capacity.
        per_engine = metrics.pool_size + metrics.max_overflow
        return metrics.pool_size * (metrics.capacity // per_engine) if queue else 0
    if which == "idle.min":
        return 0
    if which == "max":
        return metrics.capacity if queue else None
    if which == "pending_requests":
        return metrics.waiting
    return metrics.timeouts  # "timeouts"
