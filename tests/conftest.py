"""Suite-wide fixtures; the mingus_sessions pytest plugin makes engines follow the test databases.

The plugin (``mingus_sessions.testing``, loaded through its entry point) wraps
pytest-django's ``django_db_setup`` so that engines are disposed before the
test databases are dropped, and provides ``sa_session`` and
``reset_mingus_sessions``.
"""

from __future__ import annotations

import functools
import os
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

TEST_DATABASE = os.environ.get("MINGUS_TEST_DATABASE", "sqlite")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "broker(url): needs the message broker at url; skipped when it is unreachable, "
        "except under CI (env CI set), where the test fails instead",
    )


@functools.cache
def broker_reachable(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 0), 2.0):
            return True
    except OSError:
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        for backend in ("postgresql", "mysql"):
            if item.get_closest_marker(backend) and backend != TEST_DATABASE:
                item.add_marker(pytest.mark.skip(reason=f"needs MINGUS_TEST_DATABASE={backend}"))
        broker = item.get_closest_marker("broker")
        if broker and not os.environ.get("CI") and not broker_reachable(broker.args[0]):
            item.add_marker(pytest.mark.skip(reason=f"broker {broker.args[0]} unreachable"))


@pytest.fixture(autouse=True)
def _fresh_state(reset_mingus_sessions: None) -> None:
    """Every test starts with closed breakers, zeroed counters and no open engine."""


# -- the worker tests' database (tests/celery/test_workers.py, tests/faults/) -----------------


@pytest.fixture(scope="module")
def test_database(django_db_setup: None) -> str:
    from django.db import connections

    name = str(connections["default"].settings_dict["NAME"])
    assert name.startswith("test_")
    return name


@pytest.fixture(scope="module")
def pg(test_database: str) -> Iterator[Any]:
    """An autocommit psycopg connection to the test database, with the tables tasks write."""
    from tests import celery_app as worker_module
    from tests.helpers import admin_connection

    conn = admin_connection(test_database)
    for statement in worker_module.SCHEMA:
        conn.execute(statement)
    try:
        yield conn
    finally:
        for table in worker_module.TABLES:
            conn.execute(f"DROP TABLE IF EXISTS {table}")
        conn.close()
