"""What the scope tests share: the database mark, a failure, and reading and writing notes."""

from __future__ import annotations

import copy
import os
from typing import Any

import pytest
from django.conf import settings as django_settings
from sqlalchemy import text
from sqlalchemy.orm import Session

from mingus_sessions import get_engine, session_scope

BACKEND = os.environ.get("MINGUS_TEST_DATABASE", "sqlite")

db = pytest.mark.django_db(transaction=True, databases=["default", "other"])


class Boom(Exception):
    """A non-database failure raised inside scopes."""


def insert(session: Session, title: str) -> None:
    session.execute(
        text("INSERT INTO testapp_note (title, body) VALUES (:title, '')"), {"title": title}
    )


def titles(pool: str | None = None) -> list[str]:
    """Every title, read from a fresh scope (so only committed rows)."""
    with session_scope(pool) as session:
        return list(
            session.execute(text("SELECT title FROM testapp_note ORDER BY title")).scalars()
        )


def checked_out(pool: str | None = None) -> int:
    return int(get_engine(pool).pool.checkedout())  # type: ignore[attr-defined]


def with_pools(settings: Any, **extra: Any) -> dict[str, Any]:
    """Set ``MINGUS_SESSIONS`` to the suite's settings plus ``extra`` pools; return it."""
    config = copy.deepcopy(django_settings.MINGUS_SESSIONS)
    for key in ("CIRCUIT_BREAKER", "RETRY"):
        if key in extra:
            config[key] = extra.pop(key)
    config["POOLS"].update(extra)
    settings.MINGUS_SESSIONS = config
    return config
