"""Connection settings the driver refuses are configuration errors, not an unreachable database.

A pool whose ``DATABASES`` ``OPTIONS`` or ``CONNECT_ARGS`` the driver rejects
(an unknown libpq option, a bad ``sslmode``) fails to connect whatever the
database's state. That must read as the settings' fault: a
``ConfigurationError`` naming the key to fix, no count against the circuit
breaker, "misconfigured" in the health check, exit 3 from ``pool_check``. The
drivers refuse these before reaching any server, so the aliases point at a
closed port: nothing is listening, and nothing needs to be.
"""

from __future__ import annotations

import copy
from io import StringIO
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.core.management import call_command
from django.core.management.base import CommandError
from sqlalchemy import text

from mingus_sessions import (
    ConfigurationError,
    DatabaseUnavailableError,
    get_circuit_breaker,
    session_scope,
)
from mingus_sessions.metrics import check_all_pools
from tests.helpers import add_alias, add_unreachable_alias, closed_port

pytestmark = pytest.mark.django_db(databases=["default"])

#: More attempts than the breaker's FAILURE_THRESHOLD (5 in tests/settings.py).
BEYOND_THRESHOLD = 6


def _with_pool(settings: Any, name: str, **pool: Any) -> None:
    config = copy.deepcopy(django_settings.MINGUS_SESSIONS)
    config["POOLS"][name] = pool
    settings.MINGUS_SESSIONS = config


def _scope_error(pool: str) -> ConfigurationError:
    with pytest.raises(ConfigurationError) as caught, session_scope(pool) as session:
        session.execute(text("SELECT 1"))
    return caught.value


def _assert_reported_as_misconfigured(pool: str, key: str) -> None:
    for _ in range(BEYOND_THRESHOLD):
        error = _scope_error(pool)
        assert key in str(error)
        assert error.pool == pool
    breaker = get_circuit_breaker(pool)
    assert breaker is not None
    assert breaker.state == "closed"
    result = check_all_pools(timeout=5.0, pools=[pool])[pool]
    assert result["status"] == "unhealthy"
    assert result["detail"].startswith("misconfigured: ")
    assert key in result["detail"]
    with pytest.raises(CommandError) as command:
        call_command("pool_check", "--pool", pool, stdout=StringIO())
    assert command.value.returncode == 3
    assert key in str(command.value)


@pytest.fixture
def needs_psycopg() -> None:
    pytest.importorskip("psycopg")


@pytest.mark.usefixtures("needs_psycopg")
def test_a_bad_option_value_in_databases_options_names_that_key(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """libpq refusing sslmode="bogus" from OPTIONS is a ConfigurationError naming
    DATABASES[alias]["OPTIONS"], and neither the breaker nor the health check takes it for an
    outage."""
    add_unreachable_alias(monkeypatch, "badopts", {"sslmode": "bogus"})
    _with_pool(settings, "badopts", DATABASE="badopts")
    error = _scope_error("badopts")
    assert str(error).startswith(
        'Pool "badopts" cannot connect with its connection settings: '
        'connection is bad: invalid sslmode value: "bogus". '
        'Fix "sslmode" in DATABASES["badopts"]["OPTIONS"]'
    )
    assert type(error.__cause__).__name__ == "OperationalError"
    _assert_reported_as_misconfigured("badopts", 'DATABASES["badopts"]["OPTIONS"]')


@pytest.mark.usefixtures("needs_psycopg")
@pytest.mark.parametrize(
    ("connect_args", "option"),
    [({"sslmod": "require"}, "sslmod"), ({"target_session_attrs": "nope"}, "target_session_attrs")],
)
def test_a_bad_connect_arg_names_its_key_in_connect_args(
    settings: Any, monkeypatch: pytest.MonkeyPatch, connect_args: dict[str, str], option: str
) -> None:
    """An unknown libpq option or a bad value given in CONNECT_ARGS names that exact key."""
    add_unreachable_alias(monkeypatch, "badargs")
    _with_pool(settings, "badargs", DATABASE="badargs", CONNECT_ARGS=connect_args)
    key = f'MINGUS_SESSIONS["POOLS"]["badargs"]["CONNECT_ARGS"]["{option}"]'
    assert str(_scope_error("badargs")).endswith(f"Fix {key}.")
    _assert_reported_as_misconfigured("badargs", key)


@pytest.mark.usefixtures("needs_psycopg")
def test_a_refused_port_is_still_unreachable_not_misconfigured(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database that refuses the connection keeps its own reading: DatabaseUnavailableError,
    "unreachable" in the health check."""
    add_unreachable_alias(monkeypatch, "down")
    _with_pool(settings, "down", DATABASE="down")
    with pytest.raises(DatabaseUnavailableError), session_scope("down") as session:
        session.execute(text("SELECT 1"))
    result = check_all_pools(timeout=5.0, pools=["down"])["down"]
    assert result["detail"].startswith("unreachable")


def test_mysqlclient_refusing_its_arguments_is_misconfigured(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """mysqlclient refusing ssl_mode="BOGUS" names that CONNECT_ARGS key; an argument it does
    not know (a TypeError from connect()) makes the health check say misconfigured, not
    unreachable."""
    pytest.importorskip("MySQLdb")
    for alias, connect_args in (("badmysql", {"ssl_mode": "BOGUS"}), ("oddmysql", {"foo": 1})):
        add_alias(
            monkeypatch,
            alias,
            {
                "ENGINE": "django.db.backends.mysql",
                "NAME": alias,
                "USER": "root",
                "PASSWORD": "",
                "HOST": "127.0.0.1",
                "PORT": str(closed_port()),
                "OPTIONS": {},
                "ATOMIC_REQUESTS": False,
            },
        )
        config = copy.deepcopy(settings.MINGUS_SESSIONS)
        config["POOLS"][alias] = {"DATABASE": alias, "CONNECT_ARGS": connect_args}
        settings.MINGUS_SESSIONS = config
    _assert_reported_as_misconfigured(
        "badmysql", 'MINGUS_SESSIONS["POOLS"]["badmysql"]["CONNECT_ARGS"]["ssl_mode"]'
    )
    result = check_all_pools(timeout=5.0, pools=["oddmysql"])["oddmysql"]
    assert result["detail"].startswith("misconfigured (TypeError from the driver's connect())")
    with pytest.raises(CommandError) as command:
        call_command("pool_check", "--pool", "oddmysql", stdout=StringIO())
    assert command.value.returncode == 3
