"""The package hands out the core's error classes, ``is_transient`` and ``CircuitBreaker`` under
its public names.

Moved out of ``tests/core/test_translate.py`` and ``tests/core/test_breaker.py``: it
reads the package's surface (``mingus_sessions``), which is glue, not the core.
"""

from __future__ import annotations

import mingus_sessions
from mingus_sessions._core import errors
from mingus_sessions._core.breaker import CircuitBreaker
from mingus_sessions._core.errors import DatabaseConnectionError
from mingus_sessions._core.translate import is_transient


def test_connection_error_alias_and_public_names() -> None:
    """errors.ConnectionError is DatabaseConnectionError; both modules export the same classes."""
    assert errors.ConnectionError is DatabaseConnectionError
    for name in errors.__all__:
        if name != "ConnectionError":
            assert getattr(mingus_sessions, name) is getattr(errors, name)
    assert mingus_sessions.is_transient is is_transient
    assert mingus_sessions.CircuitBreaker is CircuitBreaker
