"""The test reset goes through the one registry and forgets everything the package built."""

from __future__ import annotations

from sqlalchemy import text

from mingus_sessions import get_circuit_breaker, session_scope
from mingus_sessions._core.state import state
from mingus_sessions.metrics.api import check_pool
from mingus_sessions.tables import table_for
from tests.scopes.helpers import db
from tests.testapp.models import Note


@db
def test_reset_forgets_engines_joined_engines_pings_tables_and_breakers() -> None:
    """Everything a scope, a joined scope, a health check and table_for() leave behind."""
    with session_scope() as session:
        session.execute(text("SELECT 1"))
    with session_scope(join_django=True) as session:
        session.execute(text("SELECT 1"))
    check_pool("main")
    table_for(Note)
    get_circuit_breaker("main")
    assert state.pools
    assert state.joined_engines
    assert state.health_pings
    assert state.tables
    assert state.breakers
    assert state.sessions.snapshot()["committed_transactions"] >= 1

    state.reset()

    assert not state.pools
    assert not state.joined_engines
    assert not state.health_pings
    assert not state.tables
    assert not state.table_metadata.tables
    assert not state.breakers
    assert state.sampler is None
    assert state.sessions.snapshot()["committed_transactions"] == 0
    with session_scope() as session:  # and the next use builds anew
        assert session.execute(text("SELECT 1")).scalar_one() == 1
    assert state.pools
