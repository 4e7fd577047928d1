"""The server's own time limits end work: typed errors, and the breaker stays closed (R19).

A transaction left idle past PostgreSQL's ``idle_in_transaction_session_timeout``
is ended by the server (with its connection); a statement past
``statement_timeout`` (MariaDB: ``max_statement_time``) is cancelled. Both are
the application's slowness, not a database outage: the scope raises an error
that names the setting, nothing is committed, the circuit breaker does not
count it, health does not say "unhealthy", and the next quick scope works.
The limits are set per connection or per statement, on the test database.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import pytest
from django.conf import settings as django_settings
from sqlalchemy import text

from mingus_sessions import (
    CommitOutcomeUnknownError,
    StatementTimeoutError,
    TransactionTimeoutError,
    get_circuit_breaker,
    get_engine,
    is_transient,
    session_scope,
)
from mingus_sessions.metrics import check_all_pools
from tests.helpers import NoteRow

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "other"])

#: More scopes than the breaker's FAILURE_THRESHOLD (5 in tests/settings.py).
BEYOND_THRESHOLD = 6


def _with_pool(settings: Any, name: str, **pool: Any) -> None:
    config = copy.deepcopy(django_settings.MINGUS_SESSIONS)
    config["POOLS"][name] = {"DATABASE": "default", **pool}
    settings.MINGUS_SESSIONS = config


def _titles(prefix: str) -> list[str]:
    with session_scope() as session:
        rows = session.execute(
            text("SELECT title FROM testapp_note WHERE title LIKE :p"), {"p": prefix + "%"}
        )
        return list(rows.scalars())


def _assert_database_still_trusted(pool: str) -> None:
    breaker = get_circuit_breaker(pool)
    assert breaker is not None
    assert breaker.state == "closed"
    assert check_all_pools(timeout=5.0)[pool]["status"] != "unhealthy"
    with session_scope(pool) as session:
        assert session.execute(text("SELECT 1")).scalar_one() == 1
    assert get_engine(pool).pool.checkedout() == 0  # type: ignore[attr-defined]


# -- PostgreSQL: idle_in_transaction_session_timeout -----------------------------------------

IDLE_LIMIT_MS = 200
IDLE_PAUSE = 0.6


@pytest.fixture
def idle_limited(settings: Any) -> str:
    """A pool whose connections the server ends after 200 ms idle inside a transaction."""
    _with_pool(
        settings,
        "idle_limited",
        CONNECT_ARGS={"options": f"-c idle_in_transaction_session_timeout={IDLE_LIMIT_MS}"},
    )
    return "idle_limited"


@pytest.mark.postgresql
def test_r19_idle_transaction_ended_by_the_server_is_not_a_database_outage(
    idle_limited: str,
) -> None:
    """Scopes that sit idle past the server's limit raise TransactionTimeoutError naming it; the
    breaker stays closed."""
    for attempt in range(BEYOND_THRESHOLD):
        with pytest.raises(TransactionTimeoutError) as caught, session_scope(idle_limited) as s:
            s.add(NoteRow(title=f"idle-{attempt}"))
            s.flush()
            time.sleep(IDLE_PAUSE)  # slow work that needs no database, inside the scope
            s.execute(text("SELECT 1"))
        error = caught.value
        assert "idle_in_transaction_session_timeout" in str(error)
        assert error.pool == idle_limited
        assert getattr(error.__cause__, "orig", None).sqlstate == "25P03"  # type: ignore[union-attr]
        assert is_transient(error) is False
    assert _titles("idle-") == []
    _assert_database_still_trusted(idle_limited)


@pytest.mark.postgresql
def test_r19_idle_transaction_ended_by_the_server_recycles_only_its_own_connection(
    idle_limited: str,
) -> None:
    """The pool's other idle connections keep their backends: one slow transaction is no reason
    to reconnect them all (SQLAlchemy invalidates the whole pool on a disconnect)."""
    with session_scope(idle_limited) as first, session_scope(idle_limited, independent=True) as s:
        pids = {_backend_pid(first), _backend_pid(s)}
    with pytest.raises(TransactionTimeoutError), session_scope(idle_limited) as session:
        ended = _backend_pid(session)
        time.sleep(IDLE_PAUSE)
        session.execute(text("SELECT 1"))
    (kept,) = pids - {ended}
    with session_scope(idle_limited) as session:
        assert _backend_pid(session) == kept


def _backend_pid(session: Any) -> int:
    return int(session.execute(text("SELECT pg_backend_pid()")).scalar_one())


@pytest.mark.postgresql
def test_r19_idle_transaction_ended_before_commit_is_a_known_rollback(idle_limited: str) -> None:
    """A scope whose transaction the server ended while its code ran raises TransactionTimeoutError
    at commit, not CommitOutcomeUnknownError: nothing was committed."""
    with pytest.raises(TransactionTimeoutError) as caught, session_scope(idle_limited) as session:
        session.add(NoteRow(title="idle-at-commit"))
        session.flush()
        time.sleep(IDLE_PAUSE)
    assert not isinstance(caught.value, CommitOutcomeUnknownError)
    assert _titles("idle-at-commit") == []
    _assert_database_still_trusted(idle_limited)


# -- PostgreSQL: statement_timeout ----------------------------------------------------------


@pytest.mark.postgresql
def test_r19_statement_timeout_is_a_typed_error_and_not_a_database_outage() -> None:
    """A statement the server cancels by statement_timeout raises StatementTimeoutError naming it,
    caused by the driver's QueryCanceled; the scope's writes are rolled back."""
    for attempt in range(BEYOND_THRESHOLD):
        with pytest.raises(StatementTimeoutError) as caught, session_scope() as session:
            session.add(NoteRow(title=f"slow-{attempt}"))
            session.flush()
            session.execute(text("SET LOCAL statement_timeout = '50ms'"))
            session.execute(text("SELECT pg_sleep(2)"))
        error = caught.value
        assert "statement_timeout" in str(error)
        assert type(error.__cause__.orig).__name__ == "QueryCanceled"  # type: ignore[union-attr]
        assert error.__cause__.orig.sqlstate == "57014"  # type: ignore[union-attr]
        assert is_transient(error) is False
    assert _titles("slow-") == []
    _assert_database_still_trusted("main")


# -- MariaDB: max_statement_time ---------------------------------------------------------------


@pytest.mark.mysql
def test_r19_max_statement_time_is_a_statement_timeout() -> None:
    """A statement MariaDB interrupts by max_statement_time raises StatementTimeoutError (named)."""
    for attempt in range(BEYOND_THRESHOLD):
        with pytest.raises(StatementTimeoutError) as caught, session_scope() as session:
            session.add(NoteRow(title=f"slow-{attempt}"))
            session.flush()
            session.execute(text("SET STATEMENT max_statement_time = 0.05 FOR SELECT SLEEP(2)"))
        assert "max_statement_time" in str(caught.value)
        assert caught.value.__cause__.orig.args[0] == 1969  # type: ignore[union-attr]
    assert _titles("slow-") == []
    _assert_database_still_trusted("main")
