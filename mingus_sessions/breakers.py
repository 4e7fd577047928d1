"""One circuit breaker per pool, built from ``CIRCUIT_BREAKER`` and rebuilt when settings change."""

from __future__ import annotations

import threading

from . import conf
from ._core.breaker import CircuitBreaker
from ._core.fork import renew_lock_in_child

__all__ = ["breaker_for", "get_circuit_breaker"]

_lock = threading.Lock()
_breakers: dict[str, CircuitBreaker] = {}


def get_circuit_breaker(pool: str | None = None) -> CircuitBreaker:
    """The circuit breaker of ``pool`` (the default pool for ``None``)."""
    name = conf.pool_config(pool).name
    found = _breakers.get(name)
    if found is None:
        with _lock:
            found = _breakers.get(name)
            if found is None:
                settings = conf.get_config().circuit_breaker
                found = CircuitBreaker(
                    settings.failure_threshold, settings.recovery_timeout, name=name
                )
                _breakers[name] = found
    return found


def breaker_for(pool: str) -> CircuitBreaker | None:
    """The pool's breaker when breakers are enabled, else ``None`` (hot path)."""
    if not conf.get_config().circuit_breaker.enabled:
        return None
    found = _breakers.get(pool)
    return found if found is not None else get_circuit_breaker(pool)


def _forget() -> None:
    with _lock:
        _breakers.clear()


conf.on_invalidate(_forget)
# The breakers themselves are kept in a child: what they learnt about the
# database holds there too (breaker.py renews their own locks).
renew_lock_in_child(globals())
