"""The fixtures of the pytest plugin (:mod:`mingus_sessions.testing`).

Registered as a plugin by :func:`mingus_sessions.testing.pytest_sessionstart`
only when pytest-django runs a project that installs mingus_sessions; never
loaded otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest
from django.db import connections
from sqlalchemy.orm import Session

from . import conf
from ._core.frames import Frame, active_scope, enter, leave
from ._core.state import state
from .engines import dispose_engines, set_connect_guard
from .sessions import session_scope

__all__ = [
    "django_db_setup",
    "make_sa_session",
    "pytest_unconfigure",
    "reset_mingus_sessions",
    "sa_asession",
    "sa_session",
]


def _require_test_transaction(pool: str | None) -> None:
    """Fail the test, saying what to change, when it has no transaction to join on ``pool``."""
    pool_config = conf.pool_config(pool)
    alias = pool_config.database
    if not connections[alias].in_atomic_block:
        pytest.fail(
            f'A joined session of pool "{pool_config.name}" needs the test\'s transaction on '
            f'database "{alias}": use the `db` fixture or @pytest.mark.django_db without '
            f'transaction=True, with "{alias}" in its databases. Tests with transaction=True '
            "open their own scopes with session_scope().",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup: None) -> Iterator[None]:
    """pytest-django's test databases, with engines that follow them and let them go."""
    # Engines built before the test databases existed (at import or
    # collection time) point at the real databases: drop them.
    dispose_engines()
    try:
        yield
    finally:
        # Pooled connections keep PostgreSQL from dropping the test
        # database (and hold SQLite's in-memory one open): close them all
        # before pytest-django's teardown drops it.
        dispose_engines()


@pytest.fixture
def make_sa_session(db: None) -> Iterator[Callable[..., Session]]:
    """Call with a pool name for a session joined to the test's transaction on that pool.

    Each pool's session lasts until the end of the test; calling it again
    for the same pool gives the same session.
    """
    sessions: dict[str, Session] = {}
    with ExitStack() as stack:

        def make(pool: str | None = None) -> Session:
            name = conf.pool_config(pool).name
            found = sessions.get(name)
            if found is None:
                _require_test_transaction(name)
                found = stack.enter_context(session_scope(name, join_django=True))
                sessions[name] = found
            return found

        yield make
        # Everything rolls back with the test anyway; rolling the scopes'
        # savepoints back (rather than releasing them) also works when the
        # test left the transaction failed (PostgreSQL refuses RELEASE
        # then), so a test that failed on a database error reports that
        # error alone, with no second one from teardown.
        for session in sessions.values():
            while (nested := session.get_nested_transaction()) is not None:
                nested.rollback()


@pytest.fixture
def sa_session(make_sa_session: Callable[..., Session]) -> Session:
    """A session of the default pool on Django's connection, inside the test's transaction.

    It sees the rows the ORM wrote in the test, the ORM sees its writes
    once flushed, and everything rolls back with the test. Code under test
    that opens ``session_scope()`` on the same pool gets a SAVEPOINT on
    this session, so it joins the test's transaction too.
    """
    return make_sa_session()


@pytest.fixture
def sa_asession(make_sa_session: Callable[..., Session]) -> Iterator[Any]:
    """``sa_session`` as an ``AsyncSession``: the same joined session, awaited.

    Its statements run on Django's connection inside the test's transaction,
    through SQLAlchemy's asyncio bridge, so an async test sees the rows the
    ORM wrote and everything rolls back with the test. Code under test that
    opens ``asession_scope()`` on the default pool (an async view served by
    ``AsyncClient`` included) gets a SAVEPOINT on this session. Needs the
    ``async`` extra (greenlet) and an async test (pytest-asyncio, say).
    """
    from ._core.guarded_session import joined_async_session

    sync_session = make_sa_session()
    session = joined_async_session(sync_session)
    frame = Frame(conf.pool_config(None).name, active_scope.get())
    frame._session = sync_session
    frame.is_async = True
    frame.async_session = session
    token = enter(frame)
    try:
        yield session
    finally:
        leave(token)


@pytest.fixture
def reset_mingus_sessions() -> Iterator[None]:
    """A clean slate before and after the test: closed breakers, zeroed counters, and no
    sampler (a request served by the test client starts one, as in a server), engine,
    table or health ping left over."""
    state.reset()
    yield
    state.reset()


def pytest_unconfigure(config: pytest.Config) -> None:
    """Engines built in this run stop asking the test's permission."""
    set_connect_guard(None)
