"""Secrets and bad input (docs/reliability.md S1, S5, S7).

S1 adds a database alias ``secret`` whose password is the suite's sentinel and
whose server is a closed local port, and a pool on it, whatever
``MINGUS_TEST_DATABASE`` says: every repr, URL, exception text, traceback and
log record that using it produces must be free of the sentinel. S5 checks that
bound parameters stay out of SQLAlchemy's error texts and logs unless
``LOG_QUERY_PARAMETERS`` is set. S7 checks that malformed settings and
environment variables fail with a ``ConfigurationError`` naming the key.
"""

from __future__ import annotations

import logging
import sys
import traceback
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.views.debug import technical_500_response
from sqlalchemy import exc as sa_exc
from sqlalchemy import text

from mingus_sessions import (
    ConfigurationError,
    DatabaseConnectionError,
    DatabaseUnavailableError,
    get_engine,
    session_scope,
)
from mingus_sessions import conf as mingus_conf
from mingus_sessions.engines import get_entry
from tests.helpers import add_alias, closed_port
from tests.settings import PASSWORD_SENTINEL


def _secret_database(port: int | str) -> dict[str, Any]:
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "mingus_secret",
        "USER": "mingus_secret_user",
        "PASSWORD": PASSWORD_SENTINEL,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "OPTIONS": {"connect_timeout": 5},
    }


def _with_pool(settings: Any, name: str, pool: dict[str, Any], **top: Any) -> None:
    pools = {**settings.MINGUS_SESSIONS["POOLS"], name: pool}
    settings.MINGUS_SESSIONS = {**settings.MINGUS_SESSIONS, **top, "POOLS": pools}


@pytest.fixture
def secret(settings: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """The alias and pool "secret": a PostgreSQL server on a closed port, the sentinel password.

    The alias is added to the live ``DATABASES`` dict (and removed in teardown;
    see ``add_alias``) rather than by assigning ``settings.DATABASES``: Django
    warns that overriding ``DATABASES`` is unsupported, and its connection
    handler keeps serving the original dict, which is where engines read a
    database's settings from.
    """
    pytest.importorskip("psycopg")
    database = _secret_database(closed_port())
    add_alias(monkeypatch, "secret", database)
    _with_pool(
        settings,
        "secret",
        {
            "DATABASE": "secret",
            "POOL_SIZE": 1,
            "MAX_OVERFLOW": 0,
            "POOL_TIMEOUT": 2,
            "ECHO": True,
            "ECHO_POOL": "debug",
        },
    )
    yield database
    # echo=True gave these loggers a handler of SQLAlchemy's own; leave none behind.
    for name in (
        "sqlalchemy.engine.Engine.secret",
        "mingus_sessions._core.pools.WaitAwareQueuePool.secret",
    ):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    todo = [exc]
    while todo:
        current = todo.pop()
        if any(current is s for s in seen):
            continue
        seen.append(current)
        todo.extend(e for e in (current.__cause__, current.__context__) if e is not None)
        orig = getattr(current, "orig", None)
        if isinstance(orig, BaseException):
            todo.append(orig)
    return seen


def _exception_texts(exc: BaseException) -> list[str]:
    texts = ["".join(traceback.format_exception(exc))]
    for link in _chain(exc):
        texts += [str(link), repr(link), repr(link.args)]
    return texts


def _record_texts(records: list[logging.LogRecord]) -> list[str]:
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    return [formatter.format(r) for r in records] + [repr(r.args) for r in records]


def _assert_no_sentinel(texts: list[str]) -> None:
    leaks = [t for t in texts if PASSWORD_SENTINEL in t]
    assert not leaks, leaks[0]


# -- S1: the password appears nowhere ----------------------------------------------------------


def test_s1_engine_repr_and_url_hide_the_password(secret: dict[str, Any]) -> None:
    """The secret pool's engine repr, URL text and pool repr never show the password."""
    engine = get_engine("secret")
    assert engine.url.password == PASSWORD_SENTINEL  # it is there, just never shown
    _assert_no_sentinel(
        [
            repr(engine),
            str(engine),
            str(engine.url),
            repr(engine.url),
            engine.url.render_as_string(),
            repr(engine.pool),
            repr(get_entry("secret").spec),
            repr(get_entry("secret").config),
        ]
    )


def test_s1_registry_entry_repr_hides_the_password(secret: dict[str, Any]) -> None:
    """The registry's entry for a pool (engines.get_entry) has a repr free of the password."""
    _assert_no_sentinel([repr(get_entry("secret")), str(get_entry("secret"))])


def test_s1_connection_failure_and_logs_never_show_the_password(
    secret: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """A failed connection's exception chain, traceback and DEBUG logs never show the password."""
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="mingus_sessions")
    caplog.set_level(logging.DEBUG, logger="sqlalchemy")
    with pytest.raises(DatabaseConnectionError) as info, session_scope("secret") as s:
        s.execute(text("SELECT 1"))
    error = info.value
    assert isinstance(error, DatabaseUnavailableError)
    assert error.pool == "secret"
    assert isinstance(error.__cause__, sa_exc.OperationalError)
    _assert_no_sentinel(_exception_texts(error))

    # The same through the engine directly, without our translation in the way.
    with pytest.raises(sa_exc.OperationalError) as raw, get_engine("secret").connect():
        pass  # pragma: no cover - connecting fails
    _assert_no_sentinel(_exception_texts(raw.value))

    assert caplog.records, "DEBUG logging produced nothing to check"
    assert any(r.name.startswith(("sqlalchemy", "mingus_sessions")) for r in caplog.records)
    _assert_no_sentinel(_record_texts(caplog.records))


@pytest.mark.usefixtures("secret")  # not an argument: the page prints this frame's locals
def test_s2_debug_error_page_shows_no_credential(settings: Any, rf: Any) -> None:
    """DEBUG=True: the technical 500 page of a failed scope shows neither password nor token.

    Every frame's locals are on that page; the frames that opened the DB-API
    connection hold its parameters, so the engine cuts them from the traceback.
    """
    settings.DEBUG = True
    # Made here, not written out, and kept in no local: the page shows source lines too.
    settings.MINGUS_SESSIONS = {**settings.MINGUS_SESSIONS, "METRICS_TOKEN": uuid.uuid4().hex}
    request = rf.get("/boom")
    try:
        with session_scope("secret") as s:
            s.execute(text("SELECT 1"))
    except DatabaseConnectionError:
        page = technical_500_response(request, *sys.exc_info()).content.decode()
    else:  # pragma: no cover - connecting to a closed port fails
        pytest.fail("the scope on a closed port did not fail")
    assert "DatabaseUnavailableError" in page  # the page is the error's, with its settings
    assert "MINGUS_SESSIONS" in page
    assert PASSWORD_SENTINEL not in page
    assert settings.MINGUS_SESSIONS["METRICS_TOKEN"] not in page


@pytest.mark.parametrize(
    ("pool_override", "database_override", "key"),
    [
        ({"POOL_SIZE": "ten"}, {}, 'MINGUS_SESSIONS["POOLS"]["secret"]["POOL_SIZE"]'),
        ({"CONNECT_ARGS": "password=x"}, {}, 'MINGUS_SESSIONS["POOLS"]["secret"]["CONNECT_ARGS"]'),
        (
            {"ISOLATION_LEVEL": "SOMETIMES"},
            {},
            'MINGUS_SESSIONS["POOLS"]["secret"]["ISOLATION_LEVEL"]',
        ),
        ({}, {"PORT": "not-a-port"}, 'DATABASES["secret"]["PORT"]'),
        ({}, {"ENGINE": "django.db.backends.dummy"}, 'DATABASES["secret"]["ENGINE"]'),
    ],
    ids=["pool_size", "connect_args", "isolation", "port", "engine"],
)
def test_s1_configuration_errors_of_the_secret_pool_never_show_the_password(
    secret: dict[str, Any],
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    pool_override: dict[str, Any],
    database_override: dict[str, Any],
    key: str,
) -> None:
    """Bad settings of the secret pool raise ConfigurationError naming the key, not the password."""
    caplog.set_level(logging.DEBUG)
    for name, value in database_override.items():
        monkeypatch.setitem(secret, name, value)
    pool = {**settings.MINGUS_SESSIONS["POOLS"]["secret"], **pool_override}
    _with_pool(settings, "secret", pool)  # also clears the cached configuration
    with pytest.raises(ConfigurationError) as info:
        get_engine("secret")
    assert key in str(info.value)
    messages = [f"{m.id} {m.msg} {m.hint}" for m in checks.run_checks(tags=["mingus_sessions"])]
    _assert_no_sentinel(_exception_texts(info.value) + messages + _record_texts(caplog.records))


# -- S5: bound parameters ------------------------------------------------------------------------

_DISTINCTIVE = "h4-distinctive-bound-parameter-value"


@pytest.mark.django_db(transaction=True, databases=["default", "other"])
@pytest.mark.parametrize("log_parameters", [False, True], ids=["hidden", "logged"])
def test_s5_bound_parameters_only_in_error_text_and_logs_when_allowed(
    settings: Any, caplog: pytest.LogCaptureFixture, log_parameters: bool
) -> None:
    """Error text and echo log show bound parameters only when LOG_QUERY_PARAMETERS is True."""
    pool = {**settings.MINGUS_SESSIONS["POOLS"]["main"], "ECHO": True}
    _with_pool(settings, "main", pool, LOG_QUERY_PARAMETERS=log_parameters)
    insert = text("INSERT INTO testapp_note (title, body) VALUES (:title, :body)")
    try:
        with session_scope() as s:
            s.execute(insert, {"title": "s5", "body": "first"})
        caplog.set_level(logging.DEBUG)
        # The duplicate is the title; the distinctive value sits in another
        # column, so the server's own DETAIL line never carries it.
        with pytest.raises(sa_exc.IntegrityError) as info, session_scope() as s:
            s.execute(insert, {"title": "s5", "body": _DISTINCTIVE})
    finally:
        logger = logging.getLogger("sqlalchemy.engine.Engine.main")
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
    logged = "\n".join(_record_texts(caplog.records))
    assert "INSERT INTO testapp_note" in logged  # the echo did log the statement
    if log_parameters:
        assert _DISTINCTIVE in str(info.value)
        assert _DISTINCTIVE in logged
    else:
        assert _DISTINCTIVE not in str(info.value)
        assert "hidden" in str(info.value)
        assert _DISTINCTIVE not in logged
        assert _DISTINCTIVE not in "".join(traceback.format_exception(info.value))


# -- S7: malformed settings and environment ------------------------------------------------------


def _assert_configuration_error(exc: BaseException, key: str) -> None:
    assert type(exc) is ConfigurationError
    assert isinstance(exc, ImproperlyConfigured)
    assert key in str(exc)
    # Raised by our validation, not from inside SQLAlchemy: no SQLAlchemy frame
    # in its traceback and no SQLAlchemy exception in its chain.
    files = [frame.f_code.co_filename for frame, _ in traceback.walk_tb(exc.__traceback__)]
    assert not [f for f in files if "/sqlalchemy/" in f], files
    assert not [e for e in _chain(exc) if type(e).__module__.startswith("sqlalchemy")]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("POOL_SIZE", "ten"),
        ("POOL_SIZE", -1),
        ("POOL_SIZE", True),
        ("MAX_OVERFLOW", 2.5),
        ("POOL_TIMEOUT", "30s"),
        ("POOL_TIMEOUT", 0),
        ("POOL_TIMEOUT", float("nan")),
        ("POOL_RECYCLE", "hourly"),
        ("PRE_PING", "yes"),
        ("USE_LIFO", 1),
        ("ECHO", "loud"),
        ("READ_ONLY", "no"),
        ("POOL_CLASS", "no.such.Pool"),
        ("POOL_CLASS", "collections.OrderedDict"),
        ("ISOLATION_LEVEL", "SOMETIMES"),
        ("CONNECT_ARGS", ["sslmode", "require"]),
        ("DATABASE", "no_such_alias"),
    ],
)
def test_s7_malformed_pool_setting_names_the_key(settings: Any, key: str, value: Any) -> None:
    """A malformed pool setting makes get_engine() and session_scope() raise ConfigurationError."""
    pool = {**settings.MINGUS_SESSIONS["POOLS"]["main"], key: value}
    _with_pool(settings, "main", pool)
    where = f'MINGUS_SESSIONS["POOLS"]["main"]["{key}"]'
    with pytest.raises(ConfigurationError) as info:
        get_engine()
    _assert_configuration_error(info.value, where)
    with pytest.raises(ConfigurationError) as info, session_scope():
        pass  # pragma: no cover - entering fails
    _assert_configuration_error(info.value, where)
    found = checks.run_checks(tags=["mingus_sessions"])
    assert any(m.id.startswith("mingus_sessions.E") and where in m.msg for m in found)
    assert all(m.id in str(info.value) or where not in m.msg for m in found)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"RETRY": {"MAX_RETRIES": "3"}}, 'MINGUS_SESSIONS["RETRY"]["MAX_RETRIES"]'),
        (
            {"CIRCUIT_BREAKER": {"FAILURE_THRESHOLD": 0}},
            'MINGUS_SESSIONS["CIRCUIT_BREAKER"]["FAILURE_THRESHOLD"]',
        ),
        ({"SLOW_QUERY_THRESHOLD": "1s"}, 'MINGUS_SESSIONS["SLOW_QUERY_THRESHOLD"]'),
        ({"DEFAULT_POOL": "nope"}, 'MINGUS_SESSIONS["DEFAULT_POOL"]'),
        ({"POOLS": {}}, 'MINGUS_SESSIONS["POOLS"]'),
        ({"POOLZ": {}}, "POOLZ"),
    ],
    ids=["retry", "breaker", "slow_query", "default_pool", "no_pools", "unknown_key"],
)
def test_s7_malformed_top_level_setting_names_the_key(
    settings: Any, overrides: dict[str, Any], key: str
) -> None:
    """A malformed top-level setting makes get_engine() raise ConfigurationError naming it."""
    settings.MINGUS_SESSIONS = {**settings.MINGUS_SESSIONS, **overrides}
    with pytest.raises(ConfigurationError) as info:
        get_engine()
    _assert_configuration_error(info.value, key)


def test_s7_unknown_pool_names_the_pool() -> None:
    """Asking for a pool that is not configured raises ConfigurationError naming it."""
    with pytest.raises(ConfigurationError) as info:
        get_engine("no_such_pool")
    _assert_configuration_error(info.value, '"no_such_pool"')


def test_s7_malformed_port_names_the_database_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """A DATABASES PORT that is not a number raises ConfigurationError naming that key."""
    pytest.importorskip("psycopg")
    add_alias(monkeypatch, "secret", _secret_database("fifty"))
    monkeypatch.setitem(django_settings.MINGUS_SESSIONS["POOLS"], "secret", {"DATABASE": "secret"})
    mingus_conf.invalidate()
    try:
        with pytest.raises(ConfigurationError) as info:
            get_engine("secret")
        _assert_configuration_error(info.value, 'DATABASES["secret"]["PORT"]')
    finally:
        monkeypatch.undo()
        mingus_conf.invalidate()


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DB_POOL_SIZE", "abc"),
        ("DB_POOL_SIZE", "-2"),
        ("DB_MAX_OVERFLOW", "1.5"),
        ("DB_POOL_TIMEOUT", "soon"),
        ("DB_POOL_TIMEOUT", "nan"),
        ("DB_POOL_RECYCLE", "hourly"),
        ("DB_ECHO", "maybe"),
        ("DB_ECHO_POOL", "2"),
        ("OTHER_DB_POOL_SIZE", "abc"),
        ("DB_ENABLE_MONITORING", "perhaps"),
    ],
)
def test_s7_malformed_environment_variable_names_it(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    """A malformed environment override raises ConfigurationError naming the variable."""
    monkeypatch.setenv(variable, value)
    mingus_conf.invalidate()
    try:
        with pytest.raises(ConfigurationError) as info:
            get_engine()
        _assert_configuration_error(info.value, variable)
        assert repr(value) in str(info.value)
    finally:
        monkeypatch.undo()
        mingus_conf.invalidate()
    assert mingus_conf.pool_config("main").pool_size == 5  # the setting again, once it is gone


def test_s7_valid_environment_variable_overrides_the_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A well-formed DB_POOL_SIZE overrides POOL_SIZE of the pool main only."""
    monkeypatch.setenv("DB_POOL_SIZE", " 7 ")
    mingus_conf.invalidate()
    try:
        assert mingus_conf.pool_config("main").pool_size == 7
        assert mingus_conf.pool_config("other").pool_size == 2
        assert get_entry("main").config.pool_size == 7
    finally:
        monkeypatch.undo()
        mingus_conf.invalidate()
