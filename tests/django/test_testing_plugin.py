"""The pytest plugin ``mingus_sessions.testing``: sa_session, and engines that let the test DB go.

The in-process tests use the plugin as this suite loads it (its entry point);
the ``pytester`` tests run small users' suites in a subprocess, so that the
session teardown, where pytest-django drops the test database, is observed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from django.db import connection
from sqlalchemy import column, insert, select, table
from sqlalchemy.orm import Session

from mingus_sessions import current_session, session_scope
from mingus_sessions.testing import PLUGIN_NAME, is_active
from tests.testapp.models import Note

pytest_plugins = ["pytester"]

REPO = str(Path(__file__).resolve().parents[2])
TEST_DATABASE = os.environ.get("MINGUS_TEST_DATABASE", "sqlite")
DB_PREFIX = os.environ.get("MINGUS_TEST_DB_PREFIX", "")

notes = table("testapp_note", column("id"), column("title"), column("body"))


def _titles(session: Session) -> list[str]:
    return list(session.scalars(select(notes.c.title).order_by(notes.c.title)))


# In-process: the fixtures as this suite gets them.


def test_plugin_is_active_in_this_suite(pytestconfig: pytest.Config) -> None:
    """pytest-django runs this suite with mingus_sessions installed, so the plugin is on."""
    assert is_active(pytestconfig)


def test_sa_session_sees_orm_rows_and_the_orm_sees_its_writes(sa_session: Session) -> None:
    """With the plain ``db`` transaction, sa_session and the ORM see each other's rows."""
    Note.objects.create(title="orm")
    assert _titles(sa_session) == ["orm"]
    sa_session.execute(insert(notes).values(title="sa", body=""))
    assert sorted(Note.objects.values_list("title", flat=True)) == ["orm", "sa"]


def test_sa_session_runs_on_djangos_connection_inside_the_test_transaction(
    sa_session: Session,
) -> None:
    """sa_session borrows Django's DB-API connection while the test's atomic block is open."""
    assert connection.in_atomic_block
    assert sa_session.connection().connection.driver_connection is connection.connection


def test_scopes_opened_by_code_under_test_join_sa_session(sa_session: Session) -> None:
    """session_scope() and current_session() in code under test use sa_session (a savepoint)."""
    assert current_session() is sa_session
    with session_scope() as inner:
        assert inner is sa_session
        inner.execute(insert(notes).values(title="inner", body=""))
    assert Note.objects.filter(title="inner").exists()


@pytest.mark.django_db(databases=["default", "other"])
def test_make_sa_session_joins_another_pool(make_sa_session: Callable[..., Session]) -> None:
    """make_sa_session("other") joins the test's transaction on the other pool's database."""
    Note.objects.using("other").create(title="elsewhere")
    other = make_sa_session("other")
    assert _titles(other) == ["elsewhere"]
    assert make_sa_session("other") is other
    assert _titles(make_sa_session()) == []


@pytest.mark.django_db(transaction=True)
def test_sa_session_refuses_a_transactional_test(request: pytest.FixtureRequest) -> None:
    """With transaction=True there is no test transaction to join: the fixture says so."""
    with pytest.raises(pytest.fail.Exception, match="needs the test's transaction"):
        request.getfixturevalue("sa_session")
    assert not connection.in_atomic_block


# Users' suites, run by pytester in a subprocess.

EXAMPLE_SUITE = '''
    """A users' suite: the plugin loads through its entry point, nothing to configure."""

    from contextlib import ExitStack

    import pytest
    from django.db import connection
    from sqlalchemy import text

    from mingus_sessions import get_engine
    from tests.testapp.models import Note

    COUNT = text("SELECT count(*) FROM testapp_note")


    @pytest.fixture(scope="session")
    def warm_pool(django_db_setup, django_db_blocker):
        """Three connections used once and checked in: open in the pool until the end."""
        engine = get_engine()
        # As for the ORM, a fixture wider than a test unblocks the database itself.
        with django_db_blocker.unblock(), ExitStack() as stack:
            for conn in [stack.enter_context(engine.connect()) for _ in range(3)]:
                conn.execute(text("SELECT 1"))
        return engine


    def test_sa_session_reads_orm_rows(sa_session):
        Note.objects.create(title="one")
        Note.objects.create(title="two")
        assert sa_session.scalar(COUNT) == 2
        sa_session.execute(text("INSERT INTO testapp_note (title, body) VALUES ('three', '')"))
        assert Note.objects.count() == 3


    def test_rows_were_rolled_back(sa_session):
        assert Note.objects.count() == 0
        assert sa_session.scalar(COUNT) == 0


    @pytest.mark.django_db
    def test_pooled_connections(warm_pool):
        with ExitStack() as stack:
            conns = [stack.enter_context(warm_pool.connect()) for _ in range(3)]
            assert [conn.scalar(COUNT) for conn in conns] == [0, 0, 0]
            assert warm_pool.pool.checkedout() == 3
        assert warm_pool.pool.checkedin() >= 3
        if connection.vendor == "postgresql":
            with warm_pool.connect() as conn:
                current = conn.scalar(text("SELECT current_database()"))
            assert current == connection.settings_dict["NAME"]
'''


def _pg_connect() -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(
        host=os.environ.get("PGHOST", "127.0.0.1"),
        port=os.environ.get("PGPORT", "5432"),
        user=os.environ.get("PGUSER", "postgres"),
        password=os.environ.get("PGPASSWORD", ""),
        dbname="postgres",
        autocommit=True,
    )


def _pg_database_exists(name: str) -> bool:
    with _pg_connect() as conn:
        row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    return row is not None


def _pg_drop(name: str) -> None:
    with _pg_connect() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def users_suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The example suite in pytester's directory, with its own test database names.

    Yields the name of the test database of its ``default`` alias.
    """
    prefix = f"{DB_PREFIX}plugin_"
    monkeypatch.setenv("PYTHONPATH", REPO)
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "tests.settings")
    monkeypatch.setenv("MINGUS_TEST_DB_PREFIX", prefix)
    monkeypatch.delenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    pytester.makepyfile(test_users_suite=EXAMPLE_SUITE)
    name = f"test_{prefix}mingus"
    if TEST_DATABASE == "postgresql":
        _pg_drop(name)  # left over by an interrupted run
    yield name
    if TEST_DATABASE == "postgresql":
        _pg_drop(name)


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    # A project with pytest-asyncio sets its loop scope, as this suite's pyproject does
    # (when plugins are not autoloaded, pytest-asyncio is not there to read it).
    loop_scope = (
        ()
        if os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD")
        else ("-o", "asyncio_default_fixture_loop_scope=function")
    )
    return pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-W", "error", *loop_scope, *args, timeout=180
    )


def test_users_suite_passes_rolls_back_and_drops_its_database(
    pytester: pytest.Pytester, users_suite: str
) -> None:
    """ORM rows are visible to sa_session, roll back with each test, and the test DB is dropped.

    On PostgreSQL the session left connections in the pool; the plugin closes
    them before pytest-django drops the database, so the drop succeeds.
    """
    result = _run(pytester)
    result.assert_outcomes(passed=3)
    result.stdout.no_fnmatch_line("*Error when trying to teardown test databases*")
    if TEST_DATABASE == "postgresql":
        assert not _pg_database_exists(users_suite)


DATABASE_ERRORS = """
    import pytest
    from sqlalchemy import text
    from sqlalchemy.exc import IntegrityError

    from mingus_sessions import session_scope
    from tests.testapp.models import Note

    INSERT = text("INSERT INTO testapp_note (title, body) VALUES ('dup', '')")


    def test_fails_on_a_database_error(sa_session):
        sa_session.execute(INSERT)
        sa_session.execute(INSERT)


    def test_expects_a_database_error_in_a_savepoint(sa_session):
        sa_session.execute(INSERT)
        with pytest.raises(IntegrityError), session_scope():
            sa_session.execute(INSERT)
        assert Note.objects.count() == 1
"""


def test_a_database_error_fails_the_test_and_nothing_else(
    pytester: pytest.Pytester, users_suite: str
) -> None:
    """A test failing on a database error is one failure: sa_session's teardown adds no error.

    On PostgreSQL that error leaves the transaction failed, where releasing a
    savepoint is refused; the fixture rolls its savepoint back instead.
    """
    pytester.makepyfile(test_database_errors=DATABASE_ERRORS)
    result = _run(pytester, "test_database_errors.py")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        ["E * sqlalchemy.exc.IntegrityError: *", "FAILED *::test_fails_on_a_database_error - *"]
    )
    result.stdout.no_fnmatch_line("*InFailedSqlTransaction*")


BLOCKER_SUITE = '''
    """A users' suite: the pools honour pytest-django's database blocker as the ORM does."""

    import asyncio
    import threading

    import pytest
    from django.test.testcases import DatabaseOperationForbidden
    from sqlalchemy import event, text

    from conftest import EARLY_ENGINES
    from mingus_sessions import asession_scope, get_engine, session_scope
    from tests.testapp.models import Note

    BLOCKED = 'Database access not allowed, use the "django_db" mark'
    POOLS = ("main", "other")


    class Watch:
        """Counts, from now on, every connect and every checkout of a pool's engine."""

        def __init__(self, pool):
            self.engine = get_engine(pool)
            self.pooled = self.engine.pool.checkedin()
            self.connects = self.checkouts = 0
            event.listen(self.engine, "do_connect", self.connected)
            event.listen(self.engine, "checkout", self.checked_out)

        def connected(self, *args):
            self.connects += 1

        def checked_out(self, *args):
            self.checkouts += 1

        def untouched(self):
            pool = self.engine.pool
            return (self.connects, self.checkouts, pool.checkedout(), pool.checkedin()) == (
                0, 0, 0, self.pooled
            )


    def select_one(pool="main", **kwargs):
        with session_scope(pool, **kwargs) as session:
            return session.execute(text("SELECT 1")).scalar_one()


    async def aselect_one(pool):
        async with asession_scope(pool) as session:
            return (await session.execute(text("SELECT 1"))).scalar_one()


    def connect(engine):
        with engine.connect() as conn:
            return conn.execute(text("SELECT 1")).scalar_one()


    def in_a_thread(call):
        """What ``call()`` raised in another thread (None if nothing)."""
        raised = []

        def run():
            try:
                call()
            except BaseException as exc:
                raised.append(exc)

        thread = threading.Thread(target=run)
        thread.start()
        thread.join(30)
        return raised[0] if raised else None


    def every_way_in(pool):
        """Each way code opens a connection of ``pool``: scopes, engines, old engines, async."""
        engine = get_engine(pool)
        return [
            lambda: select_one(pool),
            lambda: asyncio.run(aselect_one(pool)),
            lambda: connect(engine),
            lambda: connect(engine.execution_options(isolation_level="AUTOCOMMIT")),
            lambda: select_one(pool, independent=True),
            lambda: connect(EARLY_ENGINES[pool]),
        ]


    def test_without_access_no_database_is_reached():
        watches = [Watch(pool) for pool in POOLS]
        for pool in POOLS:
            for attempt in every_way_in(pool):
                with pytest.raises(RuntimeError, match=BLOCKED):
                    attempt()
            with pytest.raises(RuntimeError, match=BLOCKED):
                select_one(pool, join_django=True)
            failure = in_a_thread(lambda: select_one(pool))
            assert isinstance(failure, RuntimeError) and BLOCKED in str(failure)
        assert all(watch.untouched() for watch in watches)


    def test_without_access_after_tests_left_pooled_connections(django_db_blocker):
        watches = [Watch(pool) for pool in POOLS]
        assert all(watch.pooled for watch in watches), "the tests with access ran first"
        for pool in POOLS:
            for attempt in every_way_in(pool):
                with pytest.raises(RuntimeError, match=BLOCKED):
                    attempt()
        assert all(watch.untouched() for watch in watches)
        # What decides is the blocker, not the mark: unblocked, the pools serve.
        with django_db_blocker.unblock():
            assert select_one() == select_one("other") == 1


    @pytest.mark.django_db(transaction=True, databases=["default", "other"])
    def test_with_access_the_pools_serve_and_commit():
        with session_scope() as session:
            session.execute(text("INSERT INTO testapp_note (title, body) VALUES ('sa', '')"))
        assert list(Note.objects.values_list("title", flat=True)) == ["sa"]
        assert select_one("other") == 1
        assert in_a_thread(lambda: select_one("other")) is None

        async def in_an_event_loop():
            return select_one()

        assert asyncio.run(in_an_event_loop()) == 1
        assert asyncio.run(aselect_one("other")) == 1
        assert all(get_engine(pool).pool.checkedin() for pool in POOLS)


    def undeclared_other_is_forbidden():
        watch = Watch("other")
        # "threaded connections" where the refusal comes from another thread's
        # guard (an event loop's greenlet reaches Django's connection that way).
        forbidden = "Database (threaded )?connections to 'other' are not allowed in this test"
        for attempt in every_way_in("other"):
            with pytest.raises(DatabaseOperationForbidden, match=forbidden):
                attempt()
        failure = in_a_thread(lambda: select_one("other"))
        assert isinstance(failure, DatabaseOperationForbidden), failure
        assert "'other'" in str(failure)
        # On Django's own connection too, even one the test database setup left open.
        with pytest.raises(DatabaseOperationForbidden, match="'other'"):
            select_one("other", join_django=True)
        assert watch.untouched()
        assert select_one() == 1  # the database it declared


    @pytest.mark.django_db(databases=["default"])
    def test_an_undeclared_database_is_forbidden():
        undeclared_other_is_forbidden()


    @pytest.mark.django_db(transaction=True, databases=["default"])
    def test_an_undeclared_database_is_forbidden_with_pooled_connections():
        assert get_engine("other").pool.checkedin(), "the test using it ran first"
        undeclared_other_is_forbidden()


    def test_sa_session_still_joins_the_test(sa_session):
        Note.objects.create(title="orm")
        assert sa_session.scalar(text("SELECT count(*) FROM testapp_note")) == 1
'''

BLOCKER_CONFTEST = """
    from mingus_sessions import get_engine

    #: Built when pytest imports this file, before the plugin switches on, and kept.
    EARLY_ENGINES = {pool: get_engine(pool) for pool in ("main", "other")}
"""

BLOCKER_SETTINGS = """
    import os

    from tests.settings import *  # noqa: F403
    from tests.settings import DATABASES, TEST_DATABASE

    HERE = os.path.dirname(os.path.abspath(__file__))

    if TEST_DATABASE == "sqlite":
        # Real databases in files: connecting to one creates its file. The test
        # databases stay in memory, as Django makes them for SQLite.
        DATABASES = {
            alias: {
                "ENGINE": "django.db.backends.sqlite3",
                "NAME": os.path.join(HERE, f"real_{alias}.sqlite3"),
            }
            for alias in DATABASES
        }
"""


def test_pools_honour_the_database_blocker(pytester: pytest.Pytester, users_suite: str) -> None:
    """R22: a test without access, or using a database it did not declare, gets Django's error.

    pytest-django's for a test without access, Django's DatabaseOperationForbidden
    for an undeclared database, before any pool is asked for a connection: no
    connect and no checkout, whether or not earlier tests left connections in
    the pools; tests with access, transaction=True and sa_session work as before.
    """
    pytester.makepyfile(test_blocker=BLOCKER_SUITE)
    pytester.makeconftest(BLOCKER_CONFTEST)
    _run(pytester, "test_blocker.py").assert_outcomes(passed=6)


def test_without_access_the_real_database_is_never_reached(
    pytester: pytest.Pytester, users_suite: str
) -> None:
    """R22: in a run where no test set up the test databases, the real ones stay untouched.

    On SQLite the real databases are files, which a connection would create;
    the suite's conftest.py holds engines built on them before the plugin
    switched on.
    """
    pytester.makepyfile(test_blocker=BLOCKER_SUITE, blocker_settings=BLOCKER_SETTINGS)
    pytester.makeconftest(BLOCKER_CONFTEST)
    result = _run(
        pytester, "test_blocker.py", "--ds=blocker_settings", "-k", "no_database_is_reached"
    )
    result.assert_outcomes(passed=1, deselected=5)
    assert list(pytester.path.glob("real_*")) == []


ORM_IN_A_FAILED_SCOPE = """
    import pytest

    from mingus_sessions import session_scope
    from tests.testapp.models import Note


    def save_then_fail(title):
        with session_scope():
            Note.objects.create(title=title)
            raise ValueError("the code under test fails")


    def test_orm_writes_of_a_failed_scope_roll_back(sa_session):
        Note.objects.create(title="kept")
        with pytest.raises(ValueError):
            save_then_fail("dropped")
        assert list(Note.objects.values_list("title", flat=True)) == ["kept"]
"""


def test_orm_writes_of_a_failed_scope_inside_sa_session_roll_back(
    pytester: pytest.Pytester, users_suite: str
) -> None:
    """Code under test whose scope fails after ORM writes leaves none of them in the test."""
    pytester.makepyfile(test_orm_in_scopes=ORM_IN_A_FAILED_SCOPE)
    _run(pytester, "test_orm_in_scopes.py").assert_outcomes(passed=1)


SA_SESSION_REFUSES_COMMIT = """
    import pytest
    from sqlalchemy import text

    from mingus_sessions.joined import JoinedTransactionError
    from tests.testapp.models import Note


    def test_sa_session_refuses_commit_and_rollback(sa_session):
        sa_session.execute(text("INSERT INTO testapp_note (title, body) VALUES ('kept', '')"))
        with pytest.raises(JoinedTransactionError, match="belongs to Django"):
            sa_session.commit()
        with pytest.raises(JoinedTransactionError, match="belongs to Django"):
            sa_session.rollback()
        # Refused, not half-done: the write is still there, in the test's transaction.
        assert list(Note.objects.values_list("title", flat=True)) == ["kept"]
"""


def test_sa_session_refuses_commit_and_rollback(
    pytester: pytest.Pytester, users_suite: str
) -> None:
    """The test's transaction belongs to Django: sa_session's commit() and rollback() refuse."""
    pytester.makepyfile(test_sa_session_commit=SA_SESSION_REFUSES_COMMIT)
    _run(pytester, "test_sa_session_commit.py").assert_outcomes(passed=1)


@pytest.mark.postgresql
@pytest.mark.slow
def test_without_the_plugin_the_pooled_connections_block_the_drop(
    pytester: pytest.Pytester, users_suite: str
) -> None:
    """The control: with the plugin off, the same pooled connections make the drop fail."""
    result = _run(pytester, "-p", "no:mingus_sessions", "-k", "pooled")
    result.stdout.fnmatch_lines(["*Error when trying to teardown test databases*"])
    assert _pg_database_exists(users_suite)


@pytest.mark.postgresql
def test_reuse_db_keeps_the_database_and_create_db_recreates_it(
    pytester: pytest.Pytester, users_suite: str
) -> None:
    """--reuse-db keeps the test database, --create-db rebuilds it: as pytest-django does."""
    _run(pytester, "--reuse-db").assert_outcomes(passed=3)
    assert _pg_database_exists(users_suite)
    _run(pytester, "--reuse-db").assert_outcomes(passed=3)
    _run(pytester, "--reuse-db", "--create-db").assert_outcomes(passed=3)
    assert _pg_database_exists(users_suite)


INERT_SUITE = """
    import sys


    def test_plugin_loaded_but_inert(request):
        manager = request.config.pluginmanager
        assert manager.get_plugin("mingus_sessions") is not None
        assert manager.get_plugin("{plugin_name}") is None
        if "django.conf" in sys.modules:
            from django.conf import settings

            assert not settings.configured
"""


@pytest.mark.parametrize(
    ("autoload", "args"),
    [
        pytest.param(True, (), id="autoload"),
        pytest.param(True, ("-p", "no:django"), id="without-pytest-django"),
        pytest.param(False, ("-p", "mingus_sessions"), id="explicit"),
        pytest.param(False, ("-p", "django", "-p", "mingus_sessions"), id="explicit-django"),
    ],
)
def test_plugin_does_nothing_without_django_settings(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    autoload: bool,
    args: tuple[str, ...],
) -> None:
    """Without DJANGO_SETTINGS_MODULE the plugin loads, registers no fixture, reads no setting."""
    monkeypatch.setenv("PYTHONPATH", REPO)
    monkeypatch.delenv("DJANGO_SETTINGS_MODULE", raising=False)
    if autoload:
        monkeypatch.delenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    else:
        monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.makepyfile(INERT_SUITE.format(plugin_name=PLUGIN_NAME))
    _run(pytester, *args).assert_outcomes(passed=1)


def test_plugin_does_nothing_when_the_app_is_not_installed(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Django project without mingus_sessions in INSTALLED_APPS gets no fixture from it."""
    monkeypatch.setenv("PYTHONPATH", REPO)
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "plain_settings")
    monkeypatch.delenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    pytester.makepyfile(
        plain_settings="""
            SECRET_KEY = "plain"
            INSTALLED_APPS = ["django.contrib.contenttypes"]
            DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
            USE_TZ = True
        """,
        test_plain=f"""
            import pytest


            def test_no_fixtures(request, db):
                assert request.config.pluginmanager.get_plugin("{PLUGIN_NAME}") is None
                with pytest.raises(pytest.FixtureLookupError):
                    request.getfixturevalue("sa_session")
        """,
    )
    _run(pytester).assert_outcomes(passed=1)
