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
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    pass

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
    from .engines import set_connect_guard

    set_connect_guard(_refuse_like_django)


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


def _fixtures_plugin() -> ModuleType:
    """The module holding the fixtures; imported only when the plugin is active."""
    # A module of its own rather than this one: pytest registers every fixture
    # of a plugin module it loads, and these must exist only when active.
    from . import testing_fixtures

    return testing_fixtures
