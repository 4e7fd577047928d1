"""One circuit breaker per pool, built from ``CIRCUIT_BREAKER`` and rebuilt when settings change."""

from __future__ import annotations

import os
import threading

from . import conf
from .breaker import CircuitBreaker

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


def _after_fork_in_child() -> None:
    # The lock may have been held by a parent thread that does not exist in the
    # child. The breakers themselves are kept: what they learnt about the
    # database holds in the child too (breaker.py renews their own locks).
    global _lock
    _lock = threading.Lock()


conf.on_invalidate(_forget)
os.register_at_fork(after_in_child=_after_fork_in_child)
