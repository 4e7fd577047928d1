"""READ_ONLY on PostgreSQL, the way each PGBOUNCER mode makes it, and SQLSTATE 25006 on a primary.

PgBouncer itself is in tests/topology; here the same pools run straight
against the suite's PostgreSQL, to prove what each mode sets on the server:
the driver's BEGIN READ ONLY in every mode, plus a session-wide setting only
where a pool in AUTOCOMMIT needs it (the startup option without PGBOUNCER) or
where the server session is the pool's own (a SET on connect in session
mode); nothing session-wide in transaction mode.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connections
from sqlalchemy import event, text

from mingus_sessions import (
    ReadOnlyTransactionError,
    get_circuit_breaker,
    get_engine,
    is_transient,
    session_scope,
)
from tests.helpers import add_alias

pytestmark = [pytest.mark.postgresql, pytest.mark.django_db(transaction=True)]


def with_pool(settings: Any, monkeypatch: pytest.MonkeyPatch, **pool: Any) -> None:
    """Pool "ro" on alias "direct": the test database, as a transaction pooler's alias would be."""
    add_alias(
        monkeypatch,
        "direct",
        {**connections["default"].settings_dict, "DISABLE_SERVER_SIDE_CURSORS": True},
    )
    settings.MINGUS_SESSIONS = {
        **settings.MINGUS_SESSIONS,
        "POOLS": {**settings.MINGUS_SESSIONS["POOLS"], "ro": {"DATABASE": "direct", **pool}},
    }


def write_refused() -> None:
    with pytest.raises(ReadOnlyTransactionError) as info, session_scope("ro") as session:
        session.execute(text("INSERT INTO testapp_note (title, body) VALUES ('no', '')"))
    assert getattr(info.value.__cause__.orig, "sqlstate", None) == "25006"  # type: ignore[union-attr]
    with session_scope() as session:
        assert session.execute(text("SELECT count(*) FROM testapp_note")).scalar() == 0


def shown(setting: str) -> str:
    with session_scope("ro") as session:
        return str(session.execute(text(f"SHOW {setting}")).scalar())


@pytest.mark.parametrize(
    ("pgbouncer", "session_wide"),
    [(None, "off"), ("session", "on"), ("transaction", "off")],
    ids=["direct", "session-mode", "transaction-mode"],
)
def test_read_only_in_each_pgbouncer_mode(
    settings: Any, monkeypatch: pytest.MonkeyPatch, pgbouncer: str | None, session_wide: str
) -> None:
    """Every transaction of a READ_ONLY pool is read-only in each mode; the server session is
    read-only too only in session mode, where it is the pool's own."""
    with_pool(settings, monkeypatch, READ_ONLY=True, PGBOUNCER=pgbouncer)
    assert shown("transaction_read_only") == "on"
    assert shown("default_transaction_read_only") == session_wide
    write_refused()


@pytest.mark.parametrize("pgbouncer", [None, "session"], ids=["direct", "session-mode"])
def test_read_only_autocommit_pool_refuses_writes(
    settings: Any, monkeypatch: pytest.MonkeyPatch, pgbouncer: str | None
) -> None:
    """READ_ONLY holds for a pool in AUTOCOMMIT, where no transaction begins READ ONLY:
    the server session itself is read-only (the check refuses this in transaction mode)."""
    with_pool(
        settings, monkeypatch, READ_ONLY=True, ISOLATION_LEVEL="AUTOCOMMIT", PGBOUNCER=pgbouncer
    )
    write_refused()


def test_a_read_only_transaction_on_a_primary_is_not_a_failover(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write pool's own READ ONLY transaction on a primary (in_hot_standby off) keeps the
    plain refusal: not transient, not counted by the breaker, the connection kept."""
    with_pool(settings, monkeypatch)
    opened: list[Any] = []
    event.listen(get_engine("ro"), "connect", lambda dbapi, record: opened.append(dbapi))
    with pytest.raises(ReadOnlyTransactionError) as info, session_scope("ro") as session:
        session.execute(text("SET TRANSACTION READ ONLY"))
        session.execute(text("INSERT INTO testapp_note (title, body) VALUES ('no', '')"))
    assert getattr(info.value.__cause__.orig, "sqlstate", None) == "25006"  # type: ignore[union-attr]
    assert not is_transient(info.value)
    assert get_circuit_breaker("ro").failures == 0
    assert [conn.closed for conn in opened] == [False]
