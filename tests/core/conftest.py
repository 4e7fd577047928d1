"""The core's tests: plain Python over SQLAlchemy, with no Django settings and no server.

They import only ``mingus_sessions._core`` (and SQLAlchemy, the drivers' own
exception classes, SQLite in memory or in a temporary file, sockets of their
own, and ``ImproperlyConfigured``, the one Django name the core uses), so they
also run with pytest-django switched off: ``make test-core`` runs them that
way, with no database up. (The few marked ``postgresql`` or ``mysql``, such as
the async pool's, run in that backend's run of the suite.)
"""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _fresh_state() -> None:
    """The suite-wide reset (tests/conftest.py) concerns the glue: the core keeps no state here."""
