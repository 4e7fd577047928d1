"""The system checks and the cached settings reader, through Django's own settings machinery."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from django.conf import settings as django_settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

from mingus_sessions import ConfigurationError, conf, engines, get_engine
from mingus_sessions._core.state import state
from mingus_sessions.checks import check_settings
from tests.helpers import add_postgresql_alias

if TYPE_CHECKING:
    from pytest_django.fixtures import Settings

ROOT = Path(__file__).resolve().parents[2]
MAIN = 'MINGUS_SESSIONS["POOLS"]["main"]'
REPORTS = 'MINGUS_SESSIONS["POOLS"]["reports"]'

E005 = checks.Error(
    f"{REPORTS}[\"DATABASE\"] names 'reporting', which is not in DATABASES "
    "(known: default, other).",
    hint=f'Set {REPORTS}["DATABASE"] to one of the aliases in DATABASES, or add "reporting" '
    "to DATABASES.",
    id="mingus_sessions.E005",
)
BROKEN_ALIAS = {"POOLS": {"reports": {"DATABASE": "reporting"}}, "DEFAULT_POOL": "reports"}


def mingus_errors() -> list[checks.CheckMessage]:
    """The errors ``manage.py check`` reports for this package (other apps' messages, and
    the fleet cache's warning, tests/django/test_checks_fleet.py, left out)."""
    return [
        m
        for m in checks.run_checks()
        if (m.id or "").startswith("mingus_sessions.") and m.level >= checks.ERROR
    ]


@pytest.fixture
def setenv() -> Iterator[Callable[[str, str], None]]:
    """Set environment variables for one test; the cached config is dropped on both ends."""
    with pytest.MonkeyPatch.context() as patch:

        def set_and_invalidate(name: str, value: str) -> None:
            patch.setenv(name, value)
            conf.invalidate()

        yield set_and_invalidate
    conf.invalidate()


# -- the checks --------------------------------------------------------------------------


def test_valid_settings_pass() -> None:
    """The test settings (two pools on two aliases) raise no mingus_sessions error; their
    local-memory fleet cache is the one warning."""
    assert mingus_errors() == []
    assert [m.id for m in checks.run_checks(tags=["mingus_sessions"])] == ["mingus_sessions.W001"]


@pytest.fixture
def without_setting() -> Iterator[None]:
    """MINGUS_SESSIONS removed for one test.

    Deleting a setting sends no ``setting_changed`` signal (neither Django's
    override_settings nor pytest-django's ``del settings.X``), so the cached
    config is dropped by hand on both ends.
    """
    with override_settings():
        del django_settings.MINGUS_SESSIONS
        conf.invalidate()
        yield
    conf.invalidate()


@pytest.mark.usefixtures("without_setting")
def test_zero_configuration_passes() -> None:
    """Without MINGUS_SESSIONS the checks pass and there is one pool, "main", on "default"."""
    assert not hasattr(django_settings, "MINGUS_SESSIONS")
    assert mingus_errors() == []
    config = conf.get_config()
    assert list(config.pools) == ["main"]
    assert config.pools["main"].database == "default"


def test_checks_have_no_database_tag() -> None:
    """The checks read settings only, so they run the same without --database (Django 5.2, 6.x)."""
    assert check_settings.tags == ("mingus_sessions",)  # type: ignore[attr-defined]
    assert checks.Tags.database not in check_settings.tags  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(
            ["main"],
            checks.Error(
                "MINGUS_SESSIONS must be a dict, not ['main'].",
                hint="Define MINGUS_SESSIONS as a dict, or remove it to use the defaults.",
                id="mingus_sessions.E001",
            ),
            id="E001",
        ),
        pytest.param(BROKEN_ALIAS, E005, id="E005"),
        pytest.param(
            {"POOLS": {"main": {"POOL_CLASS": "sqlalchemy.engine.Engine"}}},
            checks.Error(
                f"{MAIN}[\"POOL_CLASS\"] is 'sqlalchemy.engine.Engine', which is neither "
                '"queue", "null" nor the dotted path of a sqlalchemy.pool.Pool subclass.',
                hint=f'Set {MAIN}["POOL_CLASS"] to "queue" (the default), "null" (for PgBouncer '
                'in transaction mode) or a path such as "sqlalchemy.pool.StaticPool".',
                id="mingus_sessions.E006",
            ),
            id="E006",
        ),
        pytest.param(
            {"FLEET": {"CACHE": "redis"}},
            checks.Error(
                'MINGUS_SESSIONS["FLEET"]["CACHE"] names \'redis\', which is not in CACHES '
                "(known: default).",
                hint='Set MINGUS_SESSIONS["FLEET"]["CACHE"] to a CACHES alias (a shared cache '
                "such as Redis lets every process see the fleet).",
                id="mingus_sessions.E015",
            ),
            id="E015",
        ),
        pytest.param(
            {"REQUEST_COMMIT_HOOK": "os.path"},
            checks.Error(
                "MINGUS_SESSIONS[\"REQUEST_COMMIT_HOOK\"] is 'os.path', not the dotted path of "
                "an importable callable.",
                hint='Set MINGUS_SESSIONS["REQUEST_COMMIT_HOOK"] to a path such as '
                '"myproject.hooks.should_commit", or None.',
                id="mingus_sessions.E016",
            ),
            id="E016-not-callable",
        ),
        pytest.param(
            {"REQUEST_COMMIT_HOOK": "tests.no_such_module.should_commit"},
            checks.Error(
                'MINGUS_SESSIONS["REQUEST_COMMIT_HOOK"] is \'tests.no_such_module.'
                "should_commit', not the dotted path of an importable callable.",
                hint='Set MINGUS_SESSIONS["REQUEST_COMMIT_HOOK"] to a path such as '
                '"myproject.hooks.should_commit", or None.',
                id="mingus_sessions.E016",
            ),
            id="E016-not-importable",
        ),
        pytest.param(
            {"METRICS_TOKEN": "jeton-sécurité"},
            checks.Error(
                'MINGUS_SESSIONS["METRICS_TOKEN"] has characters other than visible ASCII '
                "(letters, digits and punctuation, no spaces): servers such as gunicorn read "
                "request headers as Latin-1, so a client sending it would be refused.",
                hint='Set MINGUS_SESSIONS["METRICS_TOKEN"] to a long random ASCII string, e.g. '
                'the output of python -c "import secrets; print(secrets.token_urlsafe(32))".',
                id="mingus_sessions.E016",
            ),
            id="E016-non-ascii-token",
        ),
        pytest.param(
            {"OPENTELEMETRY": {"METRICS": 1}},
            checks.Error(
                'MINGUS_SESSIONS["OPENTELEMETRY"]["METRICS"] is 1, not True or False.',
                hint='Set MINGUS_SESSIONS["OPENTELEMETRY"]["METRICS"] to True or False.',
                id="mingus_sessions.E021",
            ),
            id="E021-not-a-boolean",
        ),
    ],
)
def test_broken_setting_is_reported(settings: Settings, value: Any, expected: checks.Error) -> None:
    """run_checks() reports a broken MINGUS_SESSIONS as one Error with its message, hint and id."""
    settings.MINGUS_SESSIONS = value
    assert mingus_errors() == [expected]


def test_transaction_pooling_checks_read_databases(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The transaction-pooling checks read the pool's real DATABASES entry (OPTIONS and
    DISABLE_SERVER_SIDE_CURSORS); run time refuses the same settings with ConfigurationError."""
    add_postgresql_alias(monkeypatch, "bouncer", 6432, {"assume_role": "reporting"})
    bounced = 'MINGUS_SESSIONS["POOLS"]["bounced"]'
    settings.MINGUS_SESSIONS = {
        "POOLS": {
            **settings.MINGUS_SESSIONS["POOLS"],
            "bounced": {"DATABASE": "bouncer", "PGBOUNCER": "transaction"},
        }
    }
    expected = [
        checks.Error(
            'DATABASES["bouncer"]["OPTIONS"]["assume_role"] runs SET ROLE on each new '
            f'connection, but {bounced}["PGBOUNCER"] is "transaction": the role would reach '
            "other clients' transactions, and be missing from this pool's.",
            hint='Connect as that role (DATABASES["bouncer"]["USER"]), or set '
            f'{bounced}["PGBOUNCER"] to "session" if PgBouncer runs this database in session '
            "mode.",
            id="mingus_sessions.E018",
        ),
        checks.Error(
            'DATABASES["bouncer"]["DISABLE_SERVER_SIDE_CURSORS"] is not True, but '
            f'{bounced}["PGBOUNCER"] is "transaction" on that database: the Django ORM\'s '
            "server-side cursors (QuerySet.iterator()) are declared WITH HOLD and fail under "
            "transaction pooling.",
            hint='Set DATABASES["bouncer"]["DISABLE_SERVER_SIDE_CURSORS"] = True, as Django\'s '
            "documentation asks for transaction pooling.",
            id="mingus_sessions.E019",
        ),
    ]
    assert mingus_errors() == expected
    with pytest.raises(ConfigurationError) as info:
        get_engine("bounced")
    assert str(info.value) == (
        f"{expected[0].msg} {expected[0].hint} (1 more problem(s): run manage.py check) "
        "[mingus_sessions.E018]"
    )

    # Fixed as the hints say, the same pool passes.
    monkeypatch.setitem(django_settings.DATABASES["bouncer"], "OPTIONS", {})
    monkeypatch.setitem(django_settings.DATABASES["bouncer"], "DISABLE_SERVER_SIDE_CURSORS", True)
    conf.invalidate()
    assert mingus_errors() == []
    assert conf.pool_config("bounced").pool_class == "null"


def test_importable_hook_passes(settings: Settings) -> None:
    """A REQUEST_COMMIT_HOOK that names an importable callable is accepted."""
    settings.MINGUS_SESSIONS = {"REQUEST_COMMIT_HOOK": "os.path.join"}
    assert mingus_errors() == []
    assert conf.get_config().request_commit_hook == "os.path.join"


def test_manage_py_check_fails_with_the_id(settings: Settings) -> None:
    """`manage.py check` stops with SystemCheckError naming the id, the message and the hint."""
    settings.MINGUS_SESSIONS = BROKEN_ALIAS
    with pytest.raises(SystemCheckError) as info:
        call_command("check")
    text = str(info.value)
    assert "(mingus_sessions.E005)" in text
    assert E005.msg in text
    assert f"HINT: {E005.hint}" in text


def test_fleet_cache_follows_caches_setting() -> None:
    """Changing CACHES is seen at once: the default FLEET cache must exist in it."""
    other = {"other": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    with override_settings(CACHES=other):
        assert [(e.id, e.msg) for e in mingus_errors()] == [
            (
                "mingus_sessions.E015",
                'MINGUS_SESSIONS["FLEET"]["CACHE"] names \'default\', which is not in CACHES '
                "(known: other).",
            )
        ]
        with pytest.raises(ConfigurationError, match=r"\[mingus_sessions\.E015\]$"):
            conf.get_config()
    assert mingus_errors() == []


# -- environment variables ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("var", "value", "expected"),
    [
        (
            "DB_POOL_SIZE",
            "lots",
            checks.Error(
                "The environment variable DB_POOL_SIZE='lots' is not a whole number.",
                hint="Set DB_POOL_SIZE to a whole number of at least 0, or unset it.",
                id="mingus_sessions.E010",
            ),
        ),
        (
            "OTHER_DB_POOL_TIMEOUT",
            "0",
            checks.Error(
                "The environment variable OTHER_DB_POOL_TIMEOUT='0' is not a positive number of "
                "seconds up to 86400 (a day).",
                hint="Set OTHER_DB_POOL_TIMEOUT to a positive number such as 30, or unset it.",
                id="mingus_sessions.E010",
            ),
        ),
        (
            "DB_ENABLE_MONITORING",
            "sometimes",
            checks.Error(
                "The environment variable DB_ENABLE_MONITORING='sometimes' is not a boolean.",
                hint="Set DB_ENABLE_MONITORING to one of true, false, 1, 0, yes, no, on, off, "
                "or unset it.",
                id="mingus_sessions.E010",
            ),
        ),
    ],
)
def test_malformed_env_var_is_reported(
    setenv: Callable[[str, str], None], var: str, value: str, expected: checks.Error
) -> None:
    """A malformed environment variable is a check error that names the variable."""
    setenv(var, value)
    assert mingus_errors() == [expected]
    with pytest.raises(ConfigurationError) as info:
        conf.get_config()
    assert str(info.value) == f"{expected.msg} {expected.hint} [mingus_sessions.E010]"


def test_env_var_overrides_settings(setenv: Callable[[str, str], None]) -> None:
    """OTHER_DB_POOL_SIZE overrides POOL_SIZE of the "other" pool once the cache is cleared."""
    assert conf.get_config().pools["other"].pool_size == 2
    setenv("OTHER_DB_POOL_SIZE", "4")
    assert mingus_errors() == []
    assert conf.get_config().pools["other"].pool_size == 4
    assert conf.get_config().pools["main"].pool_size == 5


def test_config_is_cached_until_invalidated(monkeypatch: pytest.MonkeyPatch) -> None:
    """get_config() reads settings and the environment once, until invalidate()."""
    first = conf.get_config()
    assert conf.get_config() is first
    monkeypatch.setenv("DB_POOL_SIZE", "1")
    try:
        assert conf.get_config() is first
        conf.invalidate()
        assert conf.get_config().pools["main"].pool_size == 1
    finally:
        monkeypatch.undo()
        conf.invalidate()
    assert conf.get_config().pools["main"].pool_size == 5


# -- the same problems at run time -----------------------------------------------------


def test_get_config_raises_the_check_message(settings: Settings) -> None:
    """Using an invalid configuration raises ConfigurationError with the check's message."""
    settings.MINGUS_SESSIONS = BROKEN_ALIAS
    with pytest.raises(ConfigurationError) as info:
        conf.get_config()
    assert str(info.value) == f"{E005.msg} {E005.hint} [mingus_sessions.E005]"
    assert isinstance(info.value, ImproperlyConfigured)
    with pytest.raises(ImproperlyConfigured, match=r"\[mingus_sessions\.E005\]$"):
        get_engine()


def test_run_time_error_counts_the_other_problems(settings: Settings) -> None:
    """With several problems the run-time error quotes the first and counts the rest."""
    settings.MINGUS_SESSIONS = {"POOLS": {"main": {"POOL_SIZE": -1, "MAX_OVERFLOW": -1}}}
    first, second = mingus_errors()
    with pytest.raises(ConfigurationError) as info:
        conf.get_config()
    assert str(info.value) == (
        f"{first.msg} {first.hint} (1 more problem(s): run manage.py check) [mingus_sessions.E007]"
    )
    assert second.msg not in str(info.value)


def test_unknown_pool_at_run_time() -> None:
    """Asking for a pool that is not configured names the known pools."""
    with pytest.raises(ConfigurationError) as info:
        get_engine("reports")
    assert (
        str(info.value)
        == 'No pool named "reports" in MINGUS_SESSIONS["POOLS"] (known: main, other).'
    )
    assert info.value.pool == "reports"


# -- settings changes ------------------------------------------------------------------


def test_setting_change_invalidates_the_cache() -> None:
    """override_settings gives a fresh config inside, and the original one after."""
    before = conf.get_config()
    with override_settings(MINGUS_SESSIONS={"POOLS": {"solo": {}}, "DEFAULT_POOL": "solo"}):
        inside = conf.get_config()
        assert list(inside.pools) == ["solo"]
    after = conf.get_config()
    assert after is not before
    assert after == before


def test_setting_change_disposes_engines() -> None:
    """Engines built from the old settings are disposed and forgotten when the settings change."""
    engine = get_engine()
    pool_before = engine.pool
    assert get_engine() is engine
    assert set(state.pools) == {"main"}

    new_settings = {"POOLS": {"main": {"DATABASE": "default", "POOL_SIZE": 3}}}
    with override_settings(MINGUS_SESSIONS=new_settings):
        assert state.pools == {}
        assert engine.pool is not pool_before  # dispose() replaced the pool
        fresh = get_engine()
        assert fresh is not engine
        assert engines.get_entry().config.pool_size == 3
    assert state.pools == {}
    assert get_engine() is not fresh
    assert engines.get_entry().config.pool_size == 5


def test_caches_change_disposes_engines() -> None:
    """CACHES is watched too: its change drops the engines as well."""
    engine = get_engine("other")
    with override_settings(
        CACHES={"default": {"BACKEND": "django.core.cache.backends.dummy.DummyCache"}}
    ):
        assert state.pools == {}
        assert get_engine("other") is not engine


# -- import time -----------------------------------------------------------------------


def test_import_reads_no_settings() -> None:
    """Importing the package and its Django modules works with no settings configured at all."""
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    code = (
        "import mingus_sessions, mingus_sessions.apps, mingus_sessions.checks, "
        "mingus_sessions.conf, mingus_sessions.engines, mingus_sessions.sessions\n"
        "from django.conf import settings\n"
        "assert not settings.configured, 'settings were read at import time'\n"
    )
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
