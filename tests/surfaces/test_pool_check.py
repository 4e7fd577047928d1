"""``pool_check``: exit codes, the fleet's last samples, and why a database is unreachable.

Each reason is met for real: a closed port (refused), a name that does not
resolve (unknown host), a database the server does not have (database missing),
a role it does not know (authentication failed), and a server that accepts the
TCP connection but never answers (timed out), on the shared PostgreSQL server
and, where it runs, the shared MariaDB. A wrong password and a SIGSTOPped server
of its own are in tests/faults/test_pool_check_reasons.py.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings as django_settings

from mingus_sessions import monitor
from mingus_sessions._core.state import state
from mingus_sessions.errors import ConfigurationError
from mingus_sessions.metrics import stop_monitoring
from tests.helpers import Holder, add_alias, add_unreachable_alias, closed_port
from tests.surfaces.commands import SECRET, USAGE_ERROR, add_dead_pool, run, run_failing
from tests.surfaces.helpers import FAKE_HOST, configure, db, publish

PGHOST = os.environ.get("PGHOST", "127.0.0.1")
PGPORT = os.environ.get("PGPORT", "5432")
MYSQL_HOST = os.environ.get("MYSQL_HOST", "127.0.0.1")
MYSQL_PORT = os.environ.get("MYSQL_PORT", "3306")


@pytest.fixture(autouse=True)
def _no_sampler() -> Iterator[None]:
    stop_monitoring()
    yield
    assert not monitor.is_monitoring(), "pool_check started the monitoring sampler"
    stop_monitoring()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port whose kernel completes TCP handshakes that nobody ever answers (a hung server)."""
    silent = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        yield int(silent.getsockname()[1])
    finally:
        silent.close()  # a ping still hanging fails now; let it finish within this test
        ping = state.health_pings.get("dead")
        if ping is not None:
            assert ping.done.wait(10)
            ping.thread.join(10)


# -- this process --------------------------------------------------------------------------------


@db
def test_pool_check_local_healthy_exits_0() -> None:
    """Working pools: one line per pool, the overall status, no exception (exit 0)."""
    assert run("pool_check", "--local") == (
        "main: healthy (ok)\nother: healthy (ok)\noverall: healthy\n"
    )
    assert json.loads(run("pool_check", "--local", "--json")) == {
        "status": "healthy",
        "pools": {
            "main": {"status": "healthy", "detail": "ok"},
            "other": {"status": "healthy", "detail": "ok"},
        },
        "source": "local",
    }
    assert run("pool_check", "--local", "--pool", "other", "--timeout", "2") == (
        "other: healthy (ok)\noverall: healthy\n"
    )


@db
def test_pool_check_saturated_pool_exits_1(settings: Any) -> None:
    """Every connection of a pool held by other threads: "degraded", exit code 1."""
    configure(
        settings,
        {"tiny": {"DATABASE": "default", "POOL_SIZE": 1, "MAX_OVERFLOW": 1, "POOL_TIMEOUT": 10}},
    )
    holders = [Holder("tiny"), Holder("tiny")]
    try:
        started = time.monotonic()
        error, out = run_failing("pool_check", "--local")
        assert time.monotonic() - started < 3  # not the pool's 10 s timeout
    finally:
        for holder in holders:
            holder.stop()
    assert error.returncode == 1
    assert str(error) == "degraded: tiny degraded (every connection is in use)"
    assert out.splitlines() == [
        "main: healthy (ok)",
        "other: healthy (ok)",
        "tiny: degraded (every connection is in use)",
        "overall: degraded",
    ]
    assert run("pool_check", "--local", "--pool", "tiny").endswith("overall: healthy\n")


@db
def test_pool_check_dead_database_exits_2_saying_refused(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pool whose database nobody listens for: "unreachable: refused", exit 2, no password."""
    add_dead_pool(settings, monkeypatch, closed_port())
    started = time.monotonic()
    error, out = run_failing("pool_check", "--local", "--timeout", "3")
    assert time.monotonic() - started < 3
    assert error.returncode == 2
    assert str(error) == "unhealthy: dead unhealthy (unreachable: refused)"
    assert out.splitlines() == [
        "main: healthy (ok)",
        "other: healthy (ok)",
        "dead: unhealthy (unreachable: refused)",
        "overall: unhealthy",
    ]
    json_error, json_out = run_failing("pool_check", "--local", "--json")
    assert json_error.returncode == 2
    found = json.loads(json_out)
    assert found["pools"]["dead"] == {"status": "unhealthy", "detail": "unreachable: refused"}
    for shown in (out, json_out, str(error)):
        assert SECRET not in shown


@db
def test_pool_check_answers_within_the_timeout_when_the_database_hangs(
    settings: Any, monkeypatch: pytest.MonkeyPatch, silent_port: int
) -> None:
    """A server that accepts but never answers: exit 2 once --timeout has passed, not later."""
    add_dead_pool(settings, monkeypatch, silent_port)
    started = time.monotonic()
    error, out = run_failing("pool_check", "--local", "--pool", "dead", "--timeout", "0.5")
    elapsed = time.monotonic() - started
    assert 0.4 <= elapsed < 2.0
    assert error.returncode == 2
    assert out == (
        "dead: unhealthy (unreachable: timed out (no answer within 0.5 s))\noverall: unhealthy\n"
    )


# -- why: each reason on a real server -----------------------------------------------------------


def postgresql(**database: Any) -> dict[str, Any]:
    return {
        "HOST": PGHOST,
        "PORT": PGPORT,
        "USER": os.environ.get("PGUSER", "postgres"),
        **database,
    }


def require(host: str, port: str, what: str) -> None:
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
    except OSError:
        if os.environ.get("CI"):
            pytest.fail(f"{what} at {host}:{port} is not reachable (required in CI)")
        pytest.skip(f"{what} at {host}:{port} is not reachable")


@db
@pytest.mark.parametrize(
    ("reason", "database"),
    [
        pytest.param("refused", lambda: {"PORT": str(closed_port())}, id="closed-port"),
        pytest.param("unknown host", lambda: {"HOST": "no-such-host.invalid"}, id="unresolvable"),
        pytest.param(
            "database missing",
            lambda: postgresql(NAME=f"fleet_missing_{uuid.uuid4().hex[:8]}"),
            id="missing-database",
        ),
        pytest.param(
            "authentication failed",
            lambda: postgresql(NAME="postgres", USER=f"fleet_no_role_{uuid.uuid4().hex[:8]}"),
            id="unknown-role",
        ),
    ],
)
def test_pool_check_says_why_postgresql_is_unreachable(
    settings: Any, monkeypatch: pytest.MonkeyPatch, reason: str, database: Any
) -> None:
    """Each cause in the taxonomy's words, in the text, the JSON and the error."""
    require(PGHOST, PGPORT, "PostgreSQL")
    add_dead_pool(settings, monkeypatch, closed_port(), PASSWORD="", **database())
    error, out = run_failing("pool_check", "--local", "--pool", "dead", "--timeout", "4")
    assert error.returncode == 2
    assert out.splitlines()[0] == f"dead: unhealthy (unreachable: {reason})"
    _, json_out = run_failing("pool_check", "--local", "--pool", "dead", "--json")
    assert json.loads(json_out)["pools"]["dead"]["detail"] == f"unreachable: {reason}"


@db
def test_pool_check_says_a_silent_server_timed_out(
    settings: Any, monkeypatch: pytest.MonkeyPatch, silent_port: int
) -> None:
    """connect_timeout passing before the check's deadline: "unreachable: timed out"."""
    add_dead_pool(settings, monkeypatch, silent_port, OPTIONS={"connect_timeout": 2})
    error, out = run_failing("pool_check", "--local", "--pool", "dead", "--timeout", "5")
    assert error.returncode == 2
    assert out.splitlines()[0] == "dead: unhealthy (unreachable: timed out)"


def mysql(**database: Any) -> dict[str, Any]:
    return {
        "ENGINE": "django.db.backends.mysql",
        "NAME": "mysql",
        "USER": os.environ.get("MYSQL_USER", "root"),
        "PASSWORD": os.environ.get("MYSQL_PASSWORD", ""),
        "HOST": MYSQL_HOST,
        "PORT": MYSQL_PORT,
        "OPTIONS": {"connect_timeout": 2},
        **database,
    }


@db
@pytest.mark.parametrize(
    ("reason", "database"),
    [
        pytest.param("refused", lambda port: mysql(PORT=str(closed_port())), id="closed-port"),
        pytest.param("unknown host", lambda port: mysql(HOST="no-such-host.invalid"), id="host"),
        pytest.param(
            "database missing",
            lambda port: mysql(NAME=f"fleet_missing_{uuid.uuid4().hex[:8]}"),
            id="missing-database",
        ),
        pytest.param(
            "authentication failed",
            lambda port: mysql(USER=f"fleet_no_role_{uuid.uuid4().hex[:8]}"),
            id="unknown-user",
        ),
        pytest.param(
            "timed out", lambda port: mysql(HOST="127.0.0.1", PORT=str(port)), id="silent"
        ),
    ],
)
def test_pool_check_says_why_mariadb_is_unreachable(
    settings: Any, monkeypatch: pytest.MonkeyPatch, silent_port: int, reason: str, database: Any
) -> None:
    """The same words for MariaDB's error numbers."""
    pytest.importorskip("MySQLdb")
    require(MYSQL_HOST, MYSQL_PORT, "MariaDB")
    add_alias(monkeypatch, "dead", database(silent_port))
    configure(settings, {"dead": {"DATABASE": "dead", "POOL_SIZE": 1, "MAX_OVERFLOW": 0}})
    error, out = run_failing("pool_check", "--local", "--pool", "dead", "--timeout", "5")
    assert error.returncode == 2
    assert out.splitlines()[0] == f"dead: unhealthy (unreachable: {reason})"


# -- the fleet ----------------------------------------------------------------------------------


@db
def test_pool_check_reports_the_fleets_last_samples(fleet_cache: Any) -> None:
    """By default, a breaker open or a saturated pool in any live process shows, named."""
    publish(1, main={"circuit_state": "open"})
    publish(2, other={"checked_out": 2, "utilization": 1.0})
    publish(3)
    error, out = run_failing("pool_check")
    assert error.returncode == 2
    lines = out.splitlines()
    assert lines[0] == (
        f"main: unhealthy (fleet: circuit breaker open in 1 of 3 process(es): {FAKE_HOST}:1001)"
    )
    assert lines[1] == (
        f"other: degraded (fleet: pool nearly saturated in 1 of 3 process(es): {FAKE_HOST}:1002)"
    )
    assert lines[2].startswith("fleet: 3 live process(es)")
    assert lines[3] == "overall: unhealthy"
    _, json_out = run_failing("pool_check", "--json")
    found = json.loads(json_out)
    assert found["source"] == "fleet"
    assert found["processes"][f"{FAKE_HOST}:1001"]["main"] == {
        "status": "unhealthy",
        "detail": "circuit breaker open",
    }
    assert found["processes"][f"{FAKE_HOST}:1003"]["main"]["status"] == "healthy"
    # --local: this process reaches both databases; the fleet is not asked.
    assert run("pool_check", "--local").endswith("overall: healthy\n")


@db
@pytest.mark.usefixtures("unreachable_fleet")
def test_pool_check_with_the_fleet_cache_down_says_so_and_checks_this_process() -> None:
    """The databases answer, the fleet cannot be read: one line says so; the exit code is
    this process's (a monitoring cache down is not a database down)."""
    out = run("pool_check")
    lines = out.splitlines()
    assert lines[:2] == ["main: healthy (ok)", "other: healthy (ok)"]
    assert lines[2].startswith('fleet: not checked: The FLEET cache "down" (RedisCache) cannot')
    assert lines[3] == "overall: healthy"


# -- usage ---------------------------------------------------------------------------------------


@db
def test_pool_check_of_a_pool_whose_settings_cannot_build_an_engine_exits_3(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A port that is not a number is the settings' fault, not the database's: exit 3."""
    add_unreachable_alias(monkeypatch, "misconfigured")
    monkeypatch.setitem(django_settings.DATABASES["misconfigured"], "PORT", "not-a-port")
    configure(settings, {"misconfigured": {"DATABASE": "misconfigured"}})
    error, out = run_failing("pool_check", "--pool", "misconfigured")
    assert error.returncode == USAGE_ERROR
    assert "PORT" in str(error)
    assert out == ""


@db
def test_pool_check_of_an_asyncio_pool_class_exits_3(settings: Any) -> None:
    """POOL_CLASS naming an asyncio pool is a settings error naming the key (exit 3), not a raw
    ArgumentError read as an unhealthy pool."""
    configure(settings, {"asyncpool": {"POOL_CLASS": "sqlalchemy.pool.AsyncAdaptedQueuePool"}})
    error, out = run_failing("pool_check")
    assert error.returncode == USAGE_ERROR
    assert 'MINGUS_SESSIONS["POOLS"]["asyncpool"]["POOL_CLASS"]' in str(error)
    assert "an asyncio pool" in str(error)
    assert out == ""


@db
def test_pool_check_failure_of_the_check_itself_exits_2(monkeypatch: pytest.MonkeyPatch) -> None:
    """Anything that stops the check (a missing driver, say) reads as unhealthy, not degraded."""
    from mingus_sessions.management.commands import pool_check

    def broken(**kwargs: Any) -> dict[str, Any]:
        raise ModuleNotFoundError("No module named 'psycopg'")

    monkeypatch.setattr(pool_check, "check_all_pools", broken)
    error, out = run_failing("pool_check")
    assert error.returncode == 2
    assert str(error) == "unhealthy: the check failed (ModuleNotFoundError); rerun with --traceback"
    assert isinstance(error.__cause__, ModuleNotFoundError)
    assert out == ""

    def misconfigured(**kwargs: Any) -> dict[str, Any]:
        raise ConfigurationError('DATABASES has no alias "gone".')

    monkeypatch.setattr(pool_check, "check_all_pools", misconfigured)
    error, _ = run_failing("pool_check")
    assert error.returncode == USAGE_ERROR  # settings, not the database
    assert str(error) == 'DATABASES has no alias "gone".'


def test_usage_error_from_the_command_line_exits_3(capsys: pytest.CaptureFixture[str]) -> None:
    """From the command line a usage error exits 3 with argparse's usage and message."""
    from mingus_sessions.management.commands.pool_check import Command

    with pytest.raises(SystemExit) as info:
        Command().run_from_argv(["manage.py", "pool_check", "--timeout", "soon"])
    assert info.value.code == USAGE_ERROR
    err = capsys.readouterr().err
    assert err.startswith("usage: manage.py pool_check")
    assert err.endswith(
        "manage.py pool_check: error: argument --timeout: 'soon' is not a number of seconds\n"
    )
