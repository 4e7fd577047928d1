"""Suite-wide fixtures: engines follow the test databases and leave nothing open."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from mingus_sessions import dispose_engines
from mingus_sessions.breakers import _forget as forget_breakers
from mingus_sessions.stats import session_stats

TEST_DATABASE = os.environ.get("MINGUS_TEST_DATABASE", "sqlite")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        for backend in ("postgresql", "mysql"):
            if item.get_closest_marker(backend) and backend != TEST_DATABASE:
                item.add_marker(pytest.mark.skip(reason=f"needs MINGUS_TEST_DATABASE={backend}"))


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup: None) -> Iterator[None]:
    """Build engines on the test databases, and close them before those are dropped."""
    dispose_engines()
    yield
    dispose_engines()


@pytest.fixture(autouse=True)
def _fresh_state() -> Iterator[None]:
    """Every test starts with closed breakers, zeroed counters and no open engine."""
    forget_breakers()
    session_stats.reset()
    yield
    dispose_engines()
