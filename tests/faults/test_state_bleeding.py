"""R8: what one user of a pooled backend leaves to the next one (a pool of one, so B gets A's).

Scope A changes ``search_path`` with a session-level ``SET``, locks a row and
fails. Its rollback ends the transaction, which releases the lock and, because
a ``SET`` made inside a transaction that rolls back is undone with it, restores
``search_path`` too. A scope that *commits* after a session-level ``SET`` is
different: PostgreSQL keeps the setting for the rest of the connection, and the
pool resets a returned connection with a ROLLBACK only (not ``DISCARD ALL`` or
``RESET ALL``), so the next scope on that backend inherits it. Use ``SET LOCAL``
(undone at the end of every transaction), or ``RESET search_path`` before the
scope ends.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection
from sqlalchemy import text
from sqlalchemy.orm import Session

from mingus_sessions import session_scope
from mingus_sessions._core.state import state
from tests.faults.conftest import checked_out, configure

psycopg = pytest.importorskip("psycopg")

pytestmark = [
    pytest.mark.postgresql,
    pytest.mark.django_db(transaction=True, databases=["default", "other"]),
]

SCHEMA = "faults_r8"


class Boom(Exception):
    """The failure that ends scope A."""


@pytest.fixture(autouse=True)
def _one_connection(settings: Any) -> None:
    configure(settings, one={"DATABASE": "default", "POOL_SIZE": 1, "MAX_OVERFLOW": 0})


@pytest.fixture
def admin() -> Iterator[Any]:
    """An autocommit connection of the test's own, to look at the pool's backend from outside."""
    conn = psycopg.connect(
        host=os.environ["PGHOST"],
        port=os.environ["PGPORT"],
        user=os.environ.get("PGUSER", "postgres"),
        dbname=connection.settings_dict["NAME"],
        autocommit=True,
    )
    try:
        yield conn
    finally:
        conn.close()


@pytest.fixture
def note(admin: Any) -> Iterator[int]:
    """A committed note for scope A to lock, and a schema for its search_path."""
    admin.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
    (found,) = admin.execute(
        "INSERT INTO testapp_note (title, body) VALUES ('r8', '') RETURNING id"
    ).fetchone()
    yield int(found)
    admin.execute(f"DROP SCHEMA IF EXISTS {SCHEMA}")


def backend_pid(session: Session) -> int:
    return int(session.execute(text("SELECT pg_backend_pid()")).scalar_one())


def lock_and_set(session: Session, note: int) -> int:
    """Scope A's work: a session-level SET and a row lock; returns its backend pid."""
    session.execute(text(f"SET search_path TO {SCHEMA}, public"))
    session.execute(text("SELECT id FROM testapp_note WHERE id = :id FOR UPDATE"), {"id": note})
    return backend_pid(session)


def backend_state(admin: Any, pid: int) -> tuple[str, int]:
    """The backend's ``pg_stat_activity.state`` and how many relation locks it holds."""
    (activity,) = admin.execute(
        "SELECT state FROM pg_stat_activity WHERE pid = %s", (pid,)
    ).fetchone()
    (locks,) = admin.execute(
        "SELECT count(*) FROM pg_locks WHERE pid = %s AND locktype IN ('relation', 'tuple')",
        (pid,),
    ).fetchone()
    return activity, int(locks)


def test_failed_scope_leaves_no_transaction_lock_or_setting(admin: Any, note: int) -> None:
    """A fails holding a row lock after SET search_path; B, on the same backend, finds it idle,
    unlocked and with the default search_path, and the row can be locked by anyone."""
    pids: list[int] = []
    with pytest.raises(Boom), session_scope("one") as a:
        pids.append(lock_and_set(a, note))
        activity, locks = backend_state(admin, pids[0])
        assert activity == "idle in transaction"
        assert locks > 0
        raise Boom
    (pid,) = pids
    assert backend_state(admin, pid) == ("idle", 0)
    with admin.transaction():
        admin.execute("SET LOCAL lock_timeout = '200ms'")
        admin.execute("SELECT id FROM testapp_note WHERE id = %s FOR UPDATE", (note,))

    with session_scope("one") as b:
        assert backend_pid(b) == pid
        assert b.execute(text("SHOW search_path")).scalar_one() == '"$user", public'
        assert b.execute(text("SELECT txid_current_if_assigned()")).scalar_one() is None
        assert b.execute(text("SELECT count(*) FROM testapp_note")).scalar_one() == 1
    assert checked_out("one") == 0
    assert state.sessions.failed_sessions == 1
    assert state.sessions.active_sessions == 0


def test_committed_session_level_set_is_inherited_by_the_next_scope(admin: Any, note: int) -> None:
    """What a session-level SET leaves behind: after A commits, B on the same backend still
    has A's search_path (the pool only rolls back on return); SET LOCAL leaves nothing."""
    with session_scope("one") as a:
        pid = lock_and_set(a, note)
    assert backend_state(admin, pid) == ("idle", 0)
    with session_scope("one") as b:
        assert backend_pid(b) == pid
        assert b.execute(text("SHOW search_path")).scalar_one() == f"{SCHEMA}, public"
        b.execute(text("RESET search_path"))
        b.execute(text(f"SET LOCAL search_path TO {SCHEMA}"))
    with session_scope("one") as c:
        assert backend_pid(c) == pid
        assert c.execute(text("SHOW search_path")).scalar_one() == '"$user", public'
    assert checked_out("one") == 0
