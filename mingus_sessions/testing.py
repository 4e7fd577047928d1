"""A pytest plugin for test suites of projects that use mingus_sessions.

Installed as the ``pytest11`` entry point ``mingus_sessions``, so pytest loads
it by itself, but it only switches on when all of these hold at session start:
pytest-django is loaded, Django's settings are configured, and
``mingus_sessions`` is in ``INSTALLED_APPS``. Otherwise it registers nothing
and touches no settings. ``-p no:mingus_sessions`` turns it off;
``-p mingus_sessions`` loads it when plugin autoloading is disabled.

When on, it provides:

- ``django_db_setup``, wrapping pytest-django's: engines are disposed once the
  test databases exist, and again (closing every pooled connection) before
  pytest-django drops them, so the drop never meets "database is being
  accessed by other users". ``--reuse-db`` and ``--create-db`` behave exactly
  as pytest-django makes them behave.
- ``sa_session``: a session of the default pool on Django's own connection,
  inside the test's transaction (``session_scope(join_django=True)`` for the
  test's duration), so it sees the ORM's rows and rolls back with the test.
- ``make_sa_session``: the same for any pool, ``make_sa_session("other")``.
- ``reset_mingus_sessions``: closed breakers and zeroed session counters before
  the test, engines disposed after it.

And it makes every pool honour pytest-django's database blocker as the ORM
does: before a pool is asked for a connection, a test without database access
gets pytest-django's error, and a test using a database it did not declare
gets Django's ``DatabaseOperationForbidden``; no connection is made.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

__all__ = ["PLUGIN_NAME", "is_active"]

#: The name the fixtures are registered under when the plugin is active.
PLUGIN_NAME = "mingus_sessions.fixtures"


def _pytest_django_loaded(config: pytest.Config) -> bool:
    # Whatever name it was registered under: "django" (its entry point),
    # "pytest_django.plugin" (-p), ...
    return any(
        getattr(plugin, "__name__", None) == "pytest_django.plugin"
        for plugin in config.pluginmanager.get_plugins()
    )


def _app_installed() -> bool:
    # pytest-django imports and sets up Django when its settings are
    # configured; if Django was never imported, there is nothing to join.
    if "django" not in sys.modules:
        return False
    from django.apps import apps
    from django.conf import settings

    if not settings.configured or not apps.ready:
        return False
    return apps.is_installed("mingus_sessions")


def is_active(config: pytest.Config) -> bool:
    """Whether the plugin's fixtures are registered in this pytest run."""
    return config.pluginmanager.has_plugin(PLUGIN_NAME)


@pytest.hookimpl(trylast=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    """Register the fixtures if pytest-django runs this project and the app is installed."""
    # Session start comes after every pytest_configure, so pytest-django has
    # set Django up by now. Registering here, after pytest-django registered
    # itself, also makes our django_db_setup the more specific one, so it
    # wraps pytest-django's whatever order the entry points were loaded in;
    # a conftest.py override still wraps ours.
    config = session.config
    if is_active(config) or not _pytest_django_loaded(config) or not _app_installed():
        return
    config.pluginmanager.register(_fixtures_plugin(), PLUGIN_NAME)
    from .engines import _set_connect_guard

    _set_connect_guard(_refuse_like_django)


class _WouldConnect(Exception):
    """Raised by the stand-in ``connect()`` of :func:`_refuse_like_django`'s probe."""


def _would_connect() -> None:
    raise _WouldConnect


def _refuse_like_django(alias: str) -> None:
    """Raise what the ORM would raise on opening a connection to ``alias`` now, if anything.

    Called before a pool is asked for a connection (see ``engines._guard``).
    Two guards stand in the ORM's way, and neither sees SQLAlchemy's own
    connections, so they are asked here:

    - Django's test cases replace ``connect`` and ``cursor`` of this thread's
      connection to each database the test did not declare with failures that
      raise ``DatabaseOperationForbidden``: call the one for ``connect``.
    - pytest-django blocks a test without database access by replacing
      ``ensure_connection`` on Django's connection class; Django's test cases
      wrap it too (refusing undeclared databases in other threads). Whatever
      is in place is called on a throwaway connection object whose own
      ``connect`` only reports that the call got through, so the chain raises
      its error, or reaches that ``connect`` and nothing is opened.
    """
    from django.core.exceptions import SynchronousOnlyOperation
    from django.db import connections
    from django.test.testcases import _DatabaseFailure

    for name in ("connect", "cursor"):
        failure = vars(connections[alias]).get(name)
        if isinstance(failure, _DatabaseFailure):
            failure()
    probe: Any = connections.create_connection(alias)
    probe.connect = _would_connect
    try:
        probe.ensure_connection()
    except _WouldConnect:
        return
    except SynchronousOnlyOperation:
        # Django's ensure_connection refuses to run in an event loop's thread
        # before it connects: the guards before it let the call through.
        return


def _require_test_transaction(pool: str | None) -> None:
    from django.db import connections

    from . import conf

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


def _fixtures_plugin() -> ModuleType:
    """A module object holding the fixtures; built only when the plugin is active."""
    # Defined here rather than at module level: pytest registers every fixture
    # of a plugin module it loads, and these must exist only when active.
    # (A plugin object with fixture methods would do, but pytest deprecates
    # session-scoped fixtures defined as instance methods.)
    from . import conf
    from ._core.stats import session_stats
    from .breakers import _forget
    from .engines import dispose_engines
    from .sessions import session_scope

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
    def reset_mingus_sessions() -> Iterator[None]:
        """Closed breakers and zeroed counters; afterwards no sampler and no engine left."""
        from ._core.stats import transaction_stats
        from .metrics.monitor import stop_monitoring

        _forget()
        session_stats.reset()
        transaction_stats.reset()
        yield
        # A request served by the test client starts the sampler, as in a server.
        stop_monitoring()
        dispose_engines()

    def pytest_unconfigure(config: pytest.Config) -> None:
        """Engines built in this run stop asking the test's permission."""
        from .engines import _set_connect_guard

        _set_connect_guard(None)

    plugin = ModuleType(PLUGIN_NAME, "Fixtures of the mingus_sessions pytest plugin.")
    for attribute in (
        django_db_setup,
        make_sa_session,
        sa_session,
        reset_mingus_sessions,
        pytest_unconfigure,
    ):
        setattr(plugin, attribute.__name__, attribute)
    return plugin
