"""Suite-wide fixtures; the mingus_sessions pytest plugin makes engines follow the test databases.

The plugin (``mingus_sessions.testing``, loaded through its entry point) wraps
pytest-django's ``django_db_setup`` so that engines are disposed before the
test databases are dropped, and provides ``sa_session`` and
``reset_mingus_sessions``.
"""

from __future__ import annotations

import os

import pytest

TEST_DATABASE = os.environ.get("MINGUS_TEST_DATABASE", "sqlite")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        for backend in ("postgresql", "mysql"):
            if item.get_closest_marker(backend) and backend != TEST_DATABASE:
                item.add_marker(pytest.mark.skip(reason=f"needs MINGUS_TEST_DATABASE={backend}"))


@pytest.fixture(autouse=True)
def _fresh_state(reset_mingus_sessions: None) -> None:
    """Every test starts with closed breakers, zeroed counters and no open engine."""
