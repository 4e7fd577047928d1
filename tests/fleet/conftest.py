"""The fleet of real processes: skipped unless ``scripts/test_fleet.sh`` runs it.

These tests start a gunicorn with several workers and a Celery worker on the
machine's Redis and PostgreSQL, which takes a while; ``make test`` leaves them
out and ``make test-fleet`` (CI's ``.ci/run``) runs them, with
``MINGUS_FLEET_TESTS=1`` set.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
SKIP_REASON = "the fleet of real processes runs with `make test-fleet` (MINGUS_FLEET_TESTS=1)"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip this package, and only it, unless the fleet run asked for it."""
    if os.environ.get("MINGUS_FLEET_TESTS") == "1":
        return
    skip = pytest.mark.skip(reason=SKIP_REASON)
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(skip)
