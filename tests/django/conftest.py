"""The table tests' fixture."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mingus_sessions.tables import _clear


@pytest.fixture
def fresh_tables() -> Iterator[None]:
    """Every test builds its tables anew (isolated test models reuse table names)."""
    _clear()
    yield
    _clear()
