"""One circuit breaker per pool, built from ``CIRCUIT_BREAKER``; the registry forgets them
when the settings change. With ``SHARED``, each shares its state with the fleet through the
``FLEET`` cache (:mod:`mingus_sessions.fleet_breaker`)."""

from __future__ import annotations

from . import conf
from ._core.breaker import CircuitBreaker
from ._core.shared_breaker import SharedCircuitBreaker
from ._core.state import state

__all__ = ["breaker_for", "get_circuit_breaker"]


def get_circuit_breaker(pool: str | None = None) -> CircuitBreaker:
    """The circuit breaker of ``pool`` (the default pool for ``None``)."""
    name = conf.pool_config(pool).name
    found = state.breakers.get(name)
    if found is None:
        with state.lock:
            found = state.breakers.get(name)
            if found is None:
                settings = conf.get_config().circuit_breaker
                if settings.shared:
                    from .fleet_breaker import shared_breaker_state

                    found = SharedCircuitBreaker(
                        settings.failure_threshold,
                        settings.recovery_timeout,
                        name=name,
                        shared=shared_breaker_state(),
                    )
                else:
                    found = CircuitBreaker(
                        settings.failure_threshold, settings.recovery_timeout, name=name
                    )
                state.breakers[name] = found
    return found


def breaker_for(pool: str) -> CircuitBreaker | None:
    """The pool's breaker when breakers are enabled, else ``None`` (hot path)."""
    if not conf.get_config().circuit_breaker.enabled:
        return None
    found = state.breakers.get(pool)
    return found if found is not None else get_circuit_breaker(pool)
