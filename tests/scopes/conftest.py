"""Fixtures of the scope tests that hurt a real PostgreSQL server's backends."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection


def _admin_params() -> dict[str, Any]:
    return {
        "host": os.environ.get("PGHOST", "127.0.0.1"),
        "port": os.environ.get("PGPORT", "5432"),
        "user": os.environ.get("PGUSER", "postgres"),
        "password": os.environ.get("PGPASSWORD") or None,
        "dbname": "postgres",
    }


@pytest.fixture
def admin() -> Iterator[Any]:
    """An autocommit superuser connection, made with psycopg directly, to hurt backends."""
    psycopg = pytest.importorskip("psycopg")
    conn = psycopg.connect(autocommit=True, **_admin_params())
    try:
        yield conn
    finally:
        conn.close()


@pytest.fixture
def db_name() -> str:
    """The name of the test database of the alias "default" (this run's only)."""
    name = connection.settings_dict["NAME"]
    assert name.startswith("test_")
    return str(name)
