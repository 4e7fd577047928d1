"""The pool commands: output, ``--json`` shapes, exit codes, and once each as a real process.

``call_command`` with a captured stdout proves each command and option in this
process (on the suite's database, ``MINGUS_TEST_DATABASE``); exit codes are the
``CommandError.returncode`` that ``manage.py`` exits with. The subprocess tests
run the demo's ``manage.py`` on an SQLite file of their own, and on a
PostgreSQL URL nobody listens on.
"""

from __future__ import annotations

import copy
import datetime as dt
import io
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.core.management import call_command
from django.core.management.base import CommandError
from sqlalchemy import text

from mingus_sessions import get_engine, monitor, session_scope
from mingus_sessions._core.state import state
from mingus_sessions.errors import ConfigurationError
from mingus_sessions.metrics import (
    get_pool_metrics,
    get_session_stats,
    start_monitoring,
    stop_monitoring,
)
from tests.helpers import Holder, add_alias, add_unreachable_alias
from tests.surfaces.helpers import BACKEND, EXPECTED_BACKEND, SESSION_KEYS, db

REPO = Path(__file__).resolve().parents[2]
MANAGE = REPO / "manage.py"

#: The exit code of a usage or configuration error (docs/operations.md).
USAGE_ERROR = 3
#: A password that must never appear in any command's output.
SECRET = "s3cret-command-password-never-shown"


@pytest.fixture(autouse=True)
def _no_sampler() -> Iterator[None]:
    # A sampler left running by an earlier test would publish these pools; and
    # after every test, no command may have started one.
    stop_monitoring()
    yield
    assert not monitor.is_monitoring(), "a command started the monitoring sampler"
    stop_monitoring()


def run(*args: str, **options: Any) -> str:
    """``call_command(*args)``; its stdout."""
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO(), **options)
    return out.getvalue()


def run_failing(*args: str) -> tuple[CommandError, str]:
    """``call_command(*args)`` that must raise CommandError; the error and the stdout."""
    out = io.StringIO()
    with pytest.raises(CommandError) as info:
        call_command(*args, stdout=out, stderr=io.StringIO())
    return info.value, out.getvalue()


def configure(settings: Any, pools: dict[str, Any] | None = None, **top: Any) -> None:
    """The suite's MINGUS_SESSIONS plus ``pools`` and top-level keys ``top``."""
    config = copy.deepcopy(django_settings.MINGUS_SESSIONS)
    config["POOLS"].update(pools or {})
    config.update(top)
    settings.MINGUS_SESSIONS = config


def select_one(pool: str | None = None) -> None:
    with session_scope(pool) as session:
        session.execute(text("SELECT 1"))


def closed_port() -> int:
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    probe.bind(("127.0.0.1", 0))
    port = int(probe.getsockname()[1])
    probe.close()
    return port


def add_dead_pool(settings: Any, monkeypatch: pytest.MonkeyPatch, port: int) -> None:
    """A pool "dead" on a PostgreSQL alias at 127.0.0.1:``port``, with a secret password."""
    pytest.importorskip("psycopg")
    add_alias(
        monkeypatch,
        "dead",
        {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": "dead",
            "USER": "postgres",
            "PASSWORD": SECRET,
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "OPTIONS": {"connect_timeout": 5},
        },
    )
    configure(
        settings,
        {"dead": {"DATABASE": "dead", "POOL_SIZE": 2, "MAX_OVERFLOW": 0, "POOL_TIMEOUT": 10}},
    )


class Terminal(io.StringIO):
    """A captured stdout that says it is a terminal."""

    def isatty(self) -> bool:
        return True


# -- pool_status -------------------------------------------------------------------------------


@db
def test_pool_status_shows_a_row_per_pool_and_the_sessions() -> None:
    """The table has the documented columns, one row per pool, and the session counters."""
    select_one()
    select_one("other")
    lines = run("pool_status").splitlines()
    assert lines[0].startswith(f"Pools of this process (pid {os.getpid()}) at ")
    assert lines[1].split() == [
        "POOL",
        "DATABASE",
        "BACKEND",
        "SIZE+OVF",
        "OUT",
        "IDLE",
        "OVERFLOW",
        "WAITING",
        "UTIL",
        "ACQ",
        "P99",
        "MS",
        "TIMEOUTS",
        "LEAKS",
        "BREAKER",
    ]
    main, other = lines[2].split(), lines[3].split()
    assert main[:5] == ["main", "default", EXPECTED_BACKEND, "5+5", "0"]
    assert other[:5] == ["other", "other", EXPECTED_BACKEND, "2+0", "0"]
    assert main[8] == "0%"
    assert main[-1] == other[-1] == "closed"
    assert lines[4] == ""
    assert lines[5] == (
        "Sessions: 2 total, 0 active, 2 committed, 0 rolled back, 0 failed, 0 savepoints, 0 retries"
    )
    assert len(lines) == 6


@db
def test_pool_status_shows_connections_in_use() -> None:
    """A held connection shows in OUT and UTIL of its pool only."""
    holder = Holder("other")
    try:
        rows = {line.split()[0]: line.split() for line in run("pool_status").splitlines()[2:4]}
    finally:
        holder.stop()
    assert rows["other"][4:9] == ["1", "0", "0", "0", "50%"]
    assert rows["main"][4] == "0"


@db
def test_pool_status_json_shape() -> None:
    """--json: {"pools": {name: PoolMetrics.as_dict()}, "sessions": {...}, "timestamp": iso}."""
    select_one()
    found = json.loads(run("pool_status", "--json"))
    assert set(found) == {"pools", "sessions", "timestamp"}
    assert list(found["pools"]) == ["main", "other"]
    for name, metrics in found["pools"].items():
        assert metrics == get_pool_metrics(name).as_dict()
    assert found["pools"]["main"]["checkouts"] == 1
    assert found["pools"]["main"]["backend"] == EXPECTED_BACKEND
    assert found["sessions"] == get_session_stats()
    assert set(found["sessions"]) == SESSION_KEYS
    stamp = dt.datetime.fromisoformat(found["timestamp"])
    assert stamp.tzinfo is not None
    assert abs((dt.datetime.now(dt.UTC) - stamp).total_seconds()) < 60


@db
def test_pool_status_only_the_named_pools() -> None:
    """--pool (repeatable, duplicates dropped) limits the pools shown, in the order given."""
    found = json.loads(run("pool_status", "--json", "--pool", "other"))
    assert list(found["pools"]) == ["other"]
    found = json.loads(
        run("pool_status", "--json", "--pool", "other", "--pool", "main", "--pool", "other")
    )
    assert list(found["pools"]) == ["other", "main"]
    lines = run("pool_status", "--pool", "other").splitlines()
    assert [line.split()[0] for line in lines[2:3]] == ["other"]
    assert lines[3] == ""


@db
def test_pool_status_fleet_lists_every_live_process(settings: Any) -> None:
    """--fleet reads the fleet cache: this process once it monitors; the command starts nothing."""
    configure(settings, FLEET={"CACHE": "default", "INTERVAL": 0.2})
    found = json.loads(run("pool_status", "--fleet", "--json"))
    assert set(found) == {"pools", "sessions", "timestamp", "fleet"}
    assert found["fleet"] == []
    assert not monitor.is_monitoring()
    assert "No process is publishing" in run("pool_status", "--fleet")

    select_one()
    assert start_monitoring(role="web")
    try:
        found = json.loads(run("pool_status", "--fleet", "--json"))
        text_out = run("pool_status", "--fleet")
    finally:
        stop_monitoring()
    mine = [p for p in found["fleet"] if p["pid"] == os.getpid()]
    assert len(mine) == 1
    assert {"host", "pid", "role", "updated_at", "pools", "sessions"} <= set(mine[0])
    assert mine[0]["role"] == "web"
    assert set(mine[0]["pools"]) == {"main", "other"}
    assert mine[0]["pools"]["main"]["checkouts"] == 1
    lines = text_out.splitlines()
    fleet = lines[next(i for i, line in enumerate(lines) if line.startswith("Fleet (")) + 1 :]
    assert fleet[0].split() == ["HOST", "PID", "ROLE", "AGE", "main", "other"]
    mine_row = [row.split() for row in fleet[1:] if row.split()[1] == str(os.getpid())]
    assert len(mine_row) == 1
    host, _, role, age, main, *rest = mine_row[0]
    assert (host, role) == (socket.gethostname(), "web")
    assert age.endswith("s")
    assert main == "0/10"  # checked out / capacity, then the utilization
    assert rest == ["0%", "0/2", "0%"]


@db
def test_pool_status_watch_redraws_until_interrupted(monkeypatch: pytest.MonkeyPatch) -> None:
    """--watch redraws every N seconds; Ctrl-C (here in the 2nd sleep) ends it with exit 0."""
    slept: list[float] = []

    def fake_sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(time, "sleep", fake_sleep)
    output = run("pool_status", "--watch", "0.5")
    assert slept == [0.5, 0.5]
    assert output.count("Pools of this process") == 2
    assert "\x1b[" not in output  # no escape codes when stdout is not a terminal

    slept.clear()
    terminal = Terminal()
    call_command("pool_status", "--watch", "0.5", stdout=terminal)
    drawn = terminal.getvalue()
    assert drawn.count("\x1b[H\x1b[2J") == 2
    assert drawn.startswith("\x1b[H\x1b[2JPools of this process")

    slept.clear()
    lines = run("pool_status", "--watch", "1", "--json").splitlines()
    assert len(lines) == 2  # one JSON document per line
    assert all(set(json.loads(line)) == {"pools", "sessions", "timestamp"} for line in lines)


# -- pool_check --------------------------------------------------------------------------------


@db
def test_pool_check_healthy_exits_0() -> None:
    """Working pools: one line per pool, the overall status, no exception (exit 0)."""
    assert run("pool_check") == "main: healthy (ok)\nother: healthy (ok)\noverall: healthy\n"
    assert json.loads(run("pool_check", "--json")) == {
        "status": "healthy",
        "pools": {
            "main": {"status": "healthy", "detail": "ok"},
            "other": {"status": "healthy", "detail": "ok"},
        },
    }
    assert run("pool_check", "--pool", "other", "--timeout", "2") == (
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
        error, out = run_failing("pool_check")
        assert time.monotonic() - started < 3  # not the pool's 10 s timeout
        json_error, json_out = run_failing("pool_check", "--json", "--pool", "tiny")
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
    assert json_error.returncode == 1
    assert json.loads(json_out) == {
        "status": "degraded",
        "pools": {"tiny": {"status": "degraded", "detail": "every connection is in use"}},
    }
    assert run("pool_check", "--pool", "tiny").endswith("overall: healthy\n")


@db
def test_pool_check_dead_database_exits_2(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pool whose database nobody listens for: "unhealthy", exit code 2, no password shown."""
    add_dead_pool(settings, monkeypatch, closed_port())
    started = time.monotonic()
    error, out = run_failing("pool_check", "--timeout", "3")
    assert time.monotonic() - started < 3
    assert error.returncode == 2
    assert str(error).startswith("unhealthy: dead unhealthy (unreachable (")
    lines = out.splitlines()
    assert lines[:2] == ["main: healthy (ok)", "other: healthy (ok)"]
    assert lines[2].startswith("dead: unhealthy (unreachable (")
    assert lines[3] == "overall: unhealthy"
    json_error, json_out = run_failing("pool_check", "--json")
    assert json_error.returncode == 2
    found = json.loads(json_out)
    assert found["status"] == "unhealthy"
    assert set(found["pools"]) == {"main", "other", "dead"}
    assert all(set(result) == {"status", "detail"} for result in found["pools"].values())
    assert found["pools"]["dead"]["status"] == "unhealthy"
    for shown in (out, json_out, str(error)):
        assert SECRET not in shown


@db
def test_pool_check_answers_within_the_timeout_when_the_database_hangs(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that accepts but never answers: exit 2 once --timeout has passed, not later."""

    silent = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # the kernel completes handshakes; nobody ever answers
    try:
        add_dead_pool(settings, monkeypatch, silent.getsockname()[1])
        started = time.monotonic()
        error, out = run_failing("pool_check", "--pool", "dead", "--timeout", "0.5")
        elapsed = time.monotonic() - started
    finally:
        silent.close()  # the hanging ping fails now; let it finish within this test
        ping = state.health_pings.get("dead")
        if ping is not None:
            assert ping.done.wait(10)
            ping.thread.join(10)
    assert 0.4 <= elapsed < 2.0
    assert error.returncode == 2
    assert out == "dead: unhealthy (no answer within 0.5 s)\noverall: unhealthy\n"


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


# -- pool_reset --------------------------------------------------------------------------------


@db
def test_pool_reset_named_pool_only() -> None:
    """--pool NAME zeroes that pool's counters; the other pool and the sessions keep theirs."""
    select_one()
    select_one("other")
    assert run("pool_reset", "--pool", "main") == "Reset the metrics of main.\n"
    assert get_pool_metrics("main").checkouts == 0
    assert get_pool_metrics("other").checkouts == 1
    assert get_session_stats()["total_sessions"] == 2
    select_one()
    found = json.loads(run("pool_reset", "--pool", "main", "--pool", "other", "--json"))
    assert found == {"reset": ["main", "other"], "disposed": []}
    assert get_pool_metrics("other").checkouts == 0


@db
def test_pool_reset_all_and_dispose() -> None:
    """--all zeroes every pool and the sessions; --dispose replaces the engines' pools."""
    select_one()
    select_one("other")
    pools = {name: get_engine(name).pool for name in ("main", "other")}
    assert get_pool_metrics("main").checked_in == 1
    out = run("pool_reset", "--all", "--dispose")
    assert out.splitlines() == [
        "Reset the metrics of main, other and the session counters.",
        "Disposed main, other: idle connections closed, new ones on next use.",
    ]
    for name, before in pools.items():
        assert get_engine(name).pool is not before
        assert get_pool_metrics(name).checked_in == 0
        assert get_pool_metrics(name).checkouts == 0
    assert get_session_stats()["total_sessions"] == 0
    select_one()  # the engine opens a new connection on next use
    assert get_pool_metrics("main").checkouts == 1
    found = json.loads(run("pool_reset", "--all", "--json"))
    assert found == {"reset": ["main", "other"], "disposed": []}
    found = json.loads(run("pool_reset", "--pool", "other", "--dispose", "--json"))
    assert found == {"reset": ["other"], "disposed": ["other"]}


@pytest.mark.parametrize(
    "args",
    [
        pytest.param((), id="neither"),
        pytest.param(("--pool", "main", "--all"), id="both"),
    ],
)
def test_pool_reset_needs_exactly_one_of_pool_or_all(args: tuple[str, ...]) -> None:
    """--pool and --all are a required, mutually exclusive choice: a usage error otherwise."""
    error, _ = run_failing("pool_reset", *args)
    assert error.returncode == USAGE_ERROR
    assert "--pool" in str(error)
    assert "--all" in str(error)


# -- pool_advise -------------------------------------------------------------------------------


@db
def test_pool_advise_text_and_json() -> None:
    """Advice (severity, pool, message, recommendation) and capacity per database."""
    select_one()
    found = json.loads(run("pool_advise", "--json"))
    assert set(found) == {"advice", "capacity"}
    assert found["advice"]
    for item in found["advice"]:
        assert set(item) == {"pool", "severity", "message", "recommendation"}
    aliases = {a for c in found["capacity"].values() for a in c["databases"].split(", ")}
    assert aliases == {"default", "other"}
    (default,) = [c for c in found["capacity"].values() if "default" in c["databases"]]
    assert default["backend"] == EXPECTED_BACKEND
    assert default["demand"] == (10 if BACKEND == "sqlite" else 12)  # one server on PostgreSQL
    if BACKEND == "sqlite":
        assert default["max_connections"] is None
        assert default["headroom"] is None
    else:
        assert default["headroom"] == default["usable"] - default["demand"]

    seen = get_pool_metrics("main").checkouts  # PostgreSQL's capacity check adds one
    lines = run("pool_advise").splitlines()
    assert lines[0] == "Advice:"
    assert lines[1] == f"  [info] main: Only {seen} checkout(s) observed so far."
    assert lines[2] == "      -> Ask again after some traffic; sizing advice needs observations."
    capacity = lines[lines.index("Capacity:") + 1 :]
    assert capacity[0].split() == [
        "DATABASES",
        "BACKEND",
        "PROCESSES",
        "DEMAND",
        "MAX_CONNECTIONS",
        "RESERVED",
        "HEADROOM",
        "NOTE",
    ]
    # One row per server: on PostgreSQL both aliases are one server.
    row = next(line.split() for line in capacity[1:] if line.split()[0].startswith("default"))
    if BACKEND == "sqlite":
        assert row[:4] == ["default", EXPECTED_BACKEND, "1", "10"]
    else:
        assert row[:4] == ["default,other", EXPECTED_BACKEND, "1", "12"]
    if BACKEND == "sqlite":
        assert row[4:] == ["-", "0", "-"]
    else:
        assert row[4] == str(default["max_connections"])


@db
def test_pool_advise_orders_advice_by_severity(monkeypatch: pytest.MonkeyPatch) -> None:
    """Critical advice comes first in the text, whatever order the library gave."""
    from mingus_sessions.management.commands import pool_advise

    def advise() -> dict[str, Any]:
        def item(pool: str, severity: str) -> dict[str, str]:
            return {"pool": pool, "severity": severity, "message": "m", "recommendation": "r"}

        return {
            "advice": [item("a", "info"), item("b", "critical"), item("c", "warning")],
            "capacity": {},
        }

    monkeypatch.setattr(pool_advise, "advise_pools", advise)
    lines = run("pool_advise").splitlines()
    assert [line for line in lines if line.startswith("  [")] == [
        "  [critical] b: m",
        "  [warning] c: m",
        "  [info] a: m",
    ]
    monkeypatch.setattr(pool_advise, "advise_pools", lambda: {"advice": [], "capacity": {}})
    assert run("pool_advise").splitlines()[:2] == ["Advice:", "  none"]


# -- errors and secrets ------------------------------------------------------------------------


@db
@pytest.mark.parametrize(
    "command",
    [
        ("pool_status", "--pool", "nope"),
        ("pool_check", "--pool", "nope"),
        ("pool_reset", "--pool", "nope"),
        ("pool_status", "--pool", "main", "--pool", "nope"),
    ],
)
def test_unknown_pool_is_a_usage_error(command: tuple[str, ...]) -> None:
    """An unknown --pool names it and lists the known pools; exit code 3, not 1 or 2."""
    error, out = run_failing(*command)
    assert error.returncode == USAGE_ERROR
    assert str(error) == 'No pool named "nope" in MINGUS_SESSIONS["POOLS"] (known: main, other).'
    assert out == ""


@pytest.mark.parametrize(
    "command",
    [
        ("pool_status", "--watch", "0"),
        ("pool_status", "--watch", "soon"),
        ("pool_check", "--timeout", "-1"),
        ("pool_check", "--timeout", "nan"),
        ("pool_advise", "--pool", "main"),
    ],
)
def test_bad_options_are_usage_errors(command: tuple[str, ...]) -> None:
    """Bad option values exit 3 (argparse's own 2 would read as "unhealthy")."""
    error, _ = run_failing(*command)
    assert error.returncode == USAGE_ERROR
    assert str(error).startswith("Error: ")


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


def test_fleet_table_marks_pools_a_process_does_not_have() -> None:
    """Processes with different pools: one column per pool seen, "-" where a process has none."""
    from mingus_sessions.management.commands._render import fleet_lines

    def pool(out: int, capacity: int) -> dict[str, Any]:
        return {"checked_out": out, "capacity": capacity, "utilization": out / capacity}

    fleet = [
        {"host": "a", "pid": 1, "role": "web", "updated_at": 100.0, "pools": {"main": pool(1, 4)}},
        {
            "host": "b",
            "pid": 22,
            "role": "worker",
            "updated_at": 98.0,
            "pools": {"celery": pool(2, 2)},
        },
    ]
    assert fleet_lines(fleet, now=101.0) == [
        "HOST  PID  ROLE    AGE     main    celery",
        "a       1  web     1s   1/4 25%         -",
        "b      22  worker  3s         -  2/2 100%",
    ]


def test_invalid_settings_are_usage_errors(settings: Any) -> None:
    """An invalid MINGUS_SESSIONS exits 3 with the library's message (pool_check skips checks)."""
    settings.MINGUS_SESSIONS = {"POOLS": {"main": {"DATABASE": "missing"}}}
    for command in (
        ("pool_check",),
        ("pool_status", "--skip-checks"),
        ("pool_reset", "--all", "--skip-checks"),
        ("pool_advise", "--skip-checks"),
    ):
        error, _ = run_failing(*command)
        assert error.returncode == USAGE_ERROR
        assert '"missing"' in str(error)
        assert isinstance(error.__cause__, ConfigurationError)


@db
def test_no_command_shows_a_password(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every command's text and JSON name backends and aliases, never the password."""
    add_dead_pool(settings, monkeypatch, closed_port())
    outputs = [
        run("pool_status"),
        run("pool_status", "--json", "--fleet"),
        run("pool_advise"),
        run("pool_advise", "--json"),
        run("pool_reset", "--all", "--dispose", "--json"),
    ]
    for args in (("pool_check",), ("pool_check", "--json")):
        error, out = run_failing(*args)
        outputs += [out, str(error)]
    for shown in outputs:
        assert SECRET not in shown
    assert '"backend": "postgresql+psycopg"' in outputs[1]
    assert "server limit unavailable" in outputs[2]


# -- a real process ----------------------------------------------------------------------------


def manage(
    env: dict[str, str], *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``python manage.py *args`` of the demo project; never raises on a failure."""
    return subprocess.run(
        [sys.executable, str(MANAGE), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="module")
def demo_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The demo's settings on a migrated SQLite file of this module's own."""
    var_dir = tmp_path_factory.mktemp("commands")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CELERY_")},
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "DATABASE_URL": f"sqlite:///{var_dir / 'x.sqlite3'}",
        "DEMO_VAR_DIR": str(var_dir),
        "DJANGO_DEBUG": "1",
    }
    result = manage(env, "migrate", "--no-input", "-v", "0")
    assert result.returncode == 0, result.stderr
    return env


def test_subprocess_pool_check_healthy_exits_0(demo_env: dict[str, str]) -> None:
    result = manage(demo_env, "pool_check", "--timeout", "3")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "main: healthy (ok)",
        "celery: healthy (ok)",
        "analytics: healthy (ok)",
        "overall: healthy",
    ]


def test_subprocess_pool_check_closed_port_exits_2(demo_env: dict[str, str]) -> None:
    pytest.importorskip("psycopg")
    env = {
        **demo_env,
        "DATABASE_URL": f"postgresql://postgres:{SECRET}@127.0.0.1:{closed_port()}/x",
    }
    started = time.monotonic()
    result = manage(env, "pool_check", "--timeout", "3")
    assert time.monotonic() - started < 30  # interpreter start-up included
    assert result.returncode == 2, result.stderr
    assert result.stdout.splitlines()[-1] == "overall: unhealthy"
    assert "CommandError: unhealthy: main unhealthy (unreachable (" in result.stderr
    assert SECRET not in result.stdout + result.stderr


def test_subprocess_pool_status_json_parses(demo_env: dict[str, str]) -> None:
    result = manage(demo_env, "pool_status", "--json")
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert set(found) == {"pools", "sessions", "timestamp"}
    assert list(found["pools"]) == ["main", "celery", "analytics"]
    assert found["pools"]["analytics"]["database"] == "replica"


def test_subprocess_pool_reset_all_exits_0(demo_env: dict[str, str]) -> None:
    result = manage(demo_env, "pool_reset", "--all", "--dispose", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "reset": ["main", "celery", "analytics"],
        "disposed": ["main", "celery", "analytics"],
    }


def test_subprocess_pool_advise_exits_0(demo_env: dict[str, str]) -> None:
    result = manage(demo_env, "pool_advise")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Advice:\n")
    assert "Capacity:" in result.stdout


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(("pool_status", "--pool", "nope"), id="unknown-pool"),
        pytest.param(("pool_check", "--timeout", "soon"), id="bad-timeout"),
        pytest.param(("pool_reset",), id="missing-choice"),
    ],
)
def test_subprocess_usage_errors_exit_3(demo_env: dict[str, str], args: tuple[str, ...]) -> None:
    result = manage(demo_env, *args)
    assert result.returncode == USAGE_ERROR, result.stderr
    assert result.stdout == ""
    assert "nope" in result.stderr or "error:" in result.stderr
