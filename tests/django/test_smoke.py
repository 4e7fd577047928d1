from __future__ import annotations

import pytest
from sqlalchemy import text

from mingus_sessions import current_session, get_engine, session_scope


@pytest.mark.django_db(transaction=True, databases=["default", "other"])
def test_scope_commits_and_nested_rolls_back() -> None:
    with session_scope() as s:
        s.execute(text("INSERT INTO testapp_note (title, body) VALUES ('a', '')"))
        try:
            with session_scope() as inner:
                assert inner is s
                inner.execute(text("INSERT INTO testapp_note (title, body) VALUES ('b', '')"))
                raise ValueError("boom")
        except ValueError:
            pass
        assert current_session() is s
    with session_scope() as s:
        rows = s.execute(text("SELECT title FROM testapp_note ORDER BY title")).scalars().all()
    assert rows == ["a"]
    assert get_engine().pool.checkedout() == 0
