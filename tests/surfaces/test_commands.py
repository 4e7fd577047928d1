"""``pool_status``, ``pool_reset`` and ``pool_advise``: the fleet by default, ``--local``,
output, ``--json`` shapes and exit codes.

``call_command`` with a captured stdout proves each command and option in this
process (on the suite's database, ``MINGUS_TEST_DATABASE``); exit codes are the
``CommandError.returncode`` that ``manage.py`` exits with. The fleet is a cache
of the test's own to which processes are published by hand or by samplers the
test runs (the ``fleet_cache`` fixture); ``pool_check`` is in test_pool_check.py,
the commands as real processes in test_commands_process.py, and a fleet of real
gunicorn and Celery processes in tests/fleet.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.management import call_command

from mingus_sessions import get_engine, monitor
from mingus_sessions.errors import ConfigurationError
from mingus_sessions.metrics import (
    get_pool_metrics,
    get_session_stats,
    start_monitoring,
    stop_monitoring,
)
from tests.helpers import Holder, closed_port
from tests.surfaces.commands import (
    SECRET,
    USAGE_ERROR,
    Terminal,
    add_dead_pool,
    run,
    run_failing,
)
from tests.surfaces.helpers import (
    BACKEND,
    EXPECTED_BACKEND,
    FAKE_HOST,
    SESSION_KEYS,
    db,
    publish,
    select_one,
    wait_until,
)

#: The exit code of a command that could not read the fleet cache (docs/operations.md).
FLEET_UNREACHABLE = 2
#: The exit code of pool_reset when live processes had not applied it in time.
NOT_APPLIED = 4
ME = f"{socket.gethostname()}:{os.getpid()}"


@pytest.fixture(autouse=True)
def _no_sampler() -> Iterator[None]:
    # A sampler left running by an earlier test would publish these pools; and
    # after every test, no command may have started one.
    stop_monitoring()
    yield
    assert not monitor.is_monitoring(), "a command started the monitoring sampler"
    stop_monitoring()


# -- pool_status --local -----------------------------------------------------------------------


@db
def test_pool_status_local_shows_a_row_per_pool_and_the_sessions() -> None:
    """The table has the documented columns, one row per pool, and the session counters."""
    select_one()
    select_one("other")
    lines = run("pool_status", "--local").splitlines()
    assert lines[0].startswith(f"Pools of this process (pid {os.getpid()}) at ")
    assert lines[1].split() == [
        *("POOL", "DATABASE", "BACKEND", "SIZE+OVF", "OUT", "IDLE", "OVERFLOW", "WAITING"),
        *("UTIL", "ACQ", "P99", "MS", "TIMEOUTS", "LEAKS", "BREAKER"),
    ]
    main, other = lines[2].split(), lines[3].split()
    assert main[:5] == ["main", "default", EXPECTED_BACKEND, "5+5", "0"]
    assert other[:5] == ["other", "other", EXPECTED_BACKEND, "2+0", "0"]
    assert main[8] == "0%"
    assert main[-1] == other[-1] == "closed"
    assert lines[4:] == [
        "",
        "Sessions: 2 total, 0 active, 2 committed, 0 rolled back, 0 failed, 0 savepoints, "
        "0 retries",
    ]


@db
def test_pool_status_local_shows_connections_in_use() -> None:
    """A held connection shows in OUT and UTIL of its pool only."""
    holder = Holder("other")
    try:
        lines = run("pool_status", "--local").splitlines()[2:4]
    finally:
        holder.stop()
    rows = {line.split()[0]: line.split() for line in lines}
    assert rows["other"][4:9] == ["1", "0", "0", "0", "50%"]
    assert rows["main"][4] == "0"


@db
def test_pool_status_local_json_shape() -> None:
    """--local --json: {"pools": {name: PoolMetrics.as_dict()}, "sessions", "timestamp", ...}."""
    select_one()
    found = json.loads(run("pool_status", "--local", "--json"))
    assert set(found) == {"pools", "sessions", "timestamp", "source", "processes"}
    assert found["source"] == "local"
    assert list(found["pools"]) == ["main", "other"]
    for name, metrics in found["pools"].items():
        assert metrics == get_pool_metrics(name).as_dict()
    assert found["pools"]["main"]["checkouts"] == 1
    assert found["sessions"] == get_session_stats()
    assert set(found["sessions"]) == SESSION_KEYS
    [mine] = found["processes"]
    assert (mine["host"], mine["pid"], mine["role"]) == (
        socket.gethostname(),
        os.getpid(),
        "command",
    )
    stamp = dt.datetime.fromisoformat(found["timestamp"])
    assert abs((dt.datetime.now(dt.UTC) - stamp).total_seconds()) < 60


@db
def test_pool_status_only_the_named_pools() -> None:
    """--pool (repeatable, duplicates dropped) limits the pools shown, in the order given."""
    found = json.loads(run("pool_status", "--local", "--json", "--pool", "other"))
    assert list(found["pools"]) == ["other"]
    found = json.loads(
        run(
            "pool_status",
            "--local",
            "--json",
            "--pool",
            "other",
            "--pool",
            "main",
            "--pool",
            "other",
        )
    )
    assert list(found["pools"]) == ["other", "main"]


# -- pool_status: the fleet --------------------------------------------------------------------


@db
def test_pool_status_shows_the_fleet_added_up_and_each_process(fleet_cache: Any) -> None:
    """By default: the pools of every live process added up, their sessions, one row each."""
    for _ in range(3):
        select_one()
    assert start_monitoring(role="web")  # this process publishes its 3 checkouts
    publish(1, "worker", main={"checkouts": 40, "checked_out": 2, "timeouts": 1})
    publish(2, "web", main={"checkouts": 7, "circuit_state": "open"})
    found = json.loads(run("pool_status", "--json"))
    assert found["source"] == "fleet"
    assert sorted((p["host"], p["pid"]) for p in found["processes"]) == sorted(
        [(socket.gethostname(), os.getpid()), (FAKE_HOST, 1001), (FAKE_HOST, 1002)]
    )
    main = found["pools"]["main"]
    assert main["processes"] == 3
    assert main["checkouts"] == 3 + 40 + 7
    assert main["checked_out"] == 2
    assert main["timeouts"] == 1
    assert main["capacity"] == 3 * 10
    assert main["utilization"] == pytest.approx(2 / 30)
    assert main["circuit_state"] == "open"  # the worst of any process
    assert main["pool_size"] == 5  # a setting: per process
    assert found["sessions"]["total_sessions"] == 3 * 3  # the published ones are copies
    text = run("pool_status").splitlines()
    assert text[0].startswith("Fleet at ")
    assert text[0].endswith(
        ': 3 live process(es) publishing to FLEET["CACHE"] "' + fleet_cache_alias() + '"'
    )
    assert text[2].split()[:3] == ["POOL", "PROCS", "DATABASE"]
    assert text[3].split()[:2] == ["main", "3"]
    rows = {
        line.split()[1]: line for line in text if line.startswith((FAKE_HOST, socket.gethostname()))
    }
    assert "(breaker open)" in rows["1002"]
    assert "(1 timeouts)" in rows["1001"]
    assert "Pools of this process" not in "\n".join(text)


def fleet_cache_alias() -> str:
    from mingus_sessions import conf

    return conf.get_config().fleet.cache


@db
def test_pool_status_of_an_empty_fleet_never_shows_its_own_process(fleet_cache: Any) -> None:
    """No process publishes: it says so (and that the cache is not shared), not zeros of its own."""
    select_one()
    text = run("pool_status")
    assert "No process is publishing" in text
    assert "(mingus_sessions.W001)" in text  # the test's fleet cache is a LocMemCache
    assert "Pools of this process" not in text
    found = json.loads(run("pool_status", "--json"))
    assert (found["pools"], found["processes"], found["source"]) == ({}, [], "fleet")
    assert found["sessions"]["total_sessions"] == 0
    assert "W001" in found["note"]
    assert not monitor.is_monitoring()


@db
@pytest.mark.usefixtures("unreachable_fleet")
def test_pool_status_with_the_fleet_cache_down_says_so_in_one_line() -> None:
    """An unreachable cache: exit 2 and one line naming it, no traceback, nothing else shown."""
    started = time.monotonic()
    error, out = run_failing("pool_status")
    assert time.monotonic() - started < 10
    assert error.returncode == FLEET_UNREACHABLE
    assert str(error) == (
        'The FLEET cache "down" (RedisCache) cannot be reached (ConnectionError): the processes '
        "of the deployment cannot be shown; --local shows this process"
    )
    assert out == ""
    error, out = run_failing("pool_status", "--json")
    assert (error.returncode, out) == (FLEET_UNREACHABLE, "")
    assert json.loads(run("pool_status", "--local", "--json"))["source"] == "local"


@db
def test_pool_status_watch_redraws_until_interrupted(
    monkeypatch: pytest.MonkeyPatch, fleet_cache: Any
) -> None:
    """--watch redraws every N seconds; Ctrl-C (here in the 2nd sleep) ends it with exit 0."""
    slept: list[float] = []
    real_sleep = time.sleep

    def fake_sleep(seconds: float) -> None:
        if seconds < 0.3:  # the fleet index lock's own short pauses
            real_sleep(seconds)
            return
        slept.append(seconds)
        if len(slept) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(time, "sleep", fake_sleep)
    output = run("pool_status", "--watch", "0.5", "--local")
    assert slept == [0.5, 0.5]
    assert output.count("Pools of this process") == 2
    assert "\x1b[" not in output  # no escape codes when stdout is not a terminal

    slept.clear()
    terminal = Terminal()
    call_command("pool_status", "--watch", "0.5", stdout=terminal)
    drawn = terminal.getvalue()
    assert drawn.count("\x1b[H\x1b[2J") == 2
    assert drawn.startswith("\x1b[H\x1b[2JFleet at ")

    slept.clear()
    lines = run("pool_status", "--watch", "1", "--json").splitlines()
    assert len(lines) == 2  # one JSON document per line
    assert all(json.loads(line)["source"] == "fleet" for line in lines)


@db
@pytest.mark.usefixtures("unreachable_fleet")
def test_pool_status_watch_goes_on_while_the_fleet_cache_is_down(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Watching, an unreachable cache is one line per redraw, until Ctrl-C (exit 0)."""
    rounds: list[float] = []

    def fake_sleep(seconds: float) -> None:
        rounds.append(seconds)
        if len(rounds) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(time, "sleep", fake_sleep)
    lines = run("pool_status", "--watch", "2").splitlines()
    assert len(lines) == 2
    assert all(
        line.startswith('The FLEET cache "down" (RedisCache) cannot be reached') for line in lines
    )


# -- pool_reset --------------------------------------------------------------------------------


@db
def test_pool_reset_local_named_pool_only() -> None:
    """--local --pool NAME zeroes that pool's counters here; the others keep theirs."""
    select_one()
    select_one("other")
    assert run("pool_reset", "--local", "--pool", "main") == (
        "Reset the metrics of main in this process.\n"
    )
    assert get_pool_metrics("main").checkouts == 0
    assert get_pool_metrics("other").checkouts == 1
    assert get_session_stats()["total_sessions"] == 2
    found = json.loads(run("pool_reset", "--local", "--pool", "main", "--pool", "other", "--json"))
    assert found == {"reset": ["main", "other"], "disposed": [], "source": "local"}
    assert get_pool_metrics("other").checkouts == 0


@db
def test_pool_reset_local_all_and_dispose() -> None:
    """--all zeroes every pool and the sessions; --dispose replaces the engines' pools."""
    select_one()
    select_one("other")
    pools = {name: get_engine(name).pool for name in ("main", "other")}
    assert run("pool_reset", "--local", "--all", "--dispose").splitlines() == [
        "Reset the metrics of main, other and the session counters in this process.",
        "Disposed main, other: idle connections closed, new ones on next use.",
    ]
    for name, before in pools.items():
        assert get_engine(name).pool is not before
        assert (get_pool_metrics(name).checked_in, get_pool_metrics(name).checkouts) == (0, 0)
    assert get_session_stats()["total_sessions"] == 0
    select_one()  # the engine opens a new connection on next use
    assert get_pool_metrics("main").checkouts == 1


def member(number: int, role: str = "worker") -> monitor._Monitor:
    """Another process's sampler (of FAKE_HOST), sharing the fleet cache; it ticks when told."""
    found = monitor._Monitor(role, 60)
    found.host, found.pid = FAKE_HOST, 1000 + number
    found.tick()  # joins the fleet; what was issued before it is not its to apply
    return found


@db
def test_pool_reset_reaches_every_process_and_lists_them(fleet_cache: Any) -> None:
    """The command issues the action; each sampler applies it at its next sample; the command
    waits for them and lists every process that applied it (exit 0)."""
    select_one()
    assert start_monitoring(role="web")
    others = [member(1), member(2)]
    done: dict[str, str] = {}

    def command() -> None:
        done["out"] = run("pool_reset", "--pool", "main", "--wait", "10", "--json")

    thread = threading.Thread(target=command)
    thread.start()
    assert wait_until(lambda: len(fleet_actions_listed()) == 1)
    assert get_pool_metrics("main").checkouts == 0  # the process that runs it: at once
    for other in others:
        other.tick()
    thread.join(20)
    found = json.loads(done["out"])
    assert found["source"] == "fleet"
    assert found["processes"]["pending"] == found["processes"]["gone"] == []
    assert sorted(found["processes"]["applied"]) == sorted(
        [ME, f"{FAKE_HOST}:1001", f"{FAKE_HOST}:1002"]
    )
    for other in others:
        assert list(other.applied) == [found["action"]]


def fleet_actions_listed() -> list[dict[str, Any]]:
    from mingus_sessions import fleet

    return fleet.listed_actions(fleet.fleet_cache())


@db
def test_pool_reset_says_which_processes_have_not_applied_it_when_the_wait_ends(
    fleet_cache: Any,
) -> None:
    """A process that does not sample within --wait is named, and the command exits 4;
    --wait 0 issues it and lists them all as pending, exit 0."""
    assert start_monitoring(role="web")
    member(1)  # never ticks again
    started = time.monotonic()
    error, out = run_failing("pool_reset", "--all", "--wait", "0.5")
    assert 0.5 <= time.monotonic() - started < 5
    assert error.returncode == NOT_APPLIED
    assert str(error) == f"1 live process(es) had not applied it after 0.5 s: {FAKE_HOST}:1001"
    lines = out.splitlines()
    assert lines[0] == (
        "Reset the metrics of main, other and the session counters across the fleet (2 live "
        "process(es) when it was issued)."
    )
    assert lines[2].startswith("Applied by 1 process(es) within ")
    assert lines[2].endswith(f": {ME}")  # the sampler of this process published at once
    assert lines[3].startswith(f"Not yet applied by 1: {FAKE_HOST}:1001 ")
    found = json.loads(run("pool_reset", "--all", "--wait", "0", "--json"))
    assert found["processes"]["pending"] == [f"{FAKE_HOST}:1001"]


@db
def test_pool_reset_with_no_live_process_says_so(fleet_cache: Any) -> None:
    """Nobody publishes: the command says there was no process to reach, and exits 0."""
    assert run("pool_reset", "--pool", "main").splitlines()[-1] == (
        "No process of the fleet is live: there was no other process to reach."
    )


@db
@pytest.mark.usefixtures("unreachable_fleet")
def test_pool_reset_with_the_fleet_cache_down_says_nothing_reached_the_fleet() -> None:
    """An unreachable cache: exit 2, one line, and no pretence of a reset fleet."""
    error, out = run_failing("pool_reset", "--all")
    assert error.returncode == FLEET_UNREACHABLE
    assert str(error).startswith('The FLEET cache "down" (RedisCache) cannot be reached')
    assert "Nothing reached the fleet" in str(error)
    assert "\n" not in str(error)
    assert out == ""


@pytest.mark.parametrize(
    "args",
    [pytest.param((), id="neither"), pytest.param(("--pool", "main", "--all"), id="both")],
)
def test_pool_reset_needs_exactly_one_of_pool_or_all(args: tuple[str, ...]) -> None:
    """--pool and --all are a required, mutually exclusive choice: a usage error otherwise."""
    error, _ = run_failing("pool_reset", *args)
    assert error.returncode == USAGE_ERROR
    assert "--pool" in str(error)
    assert "--all" in str(error)


# -- pool_advise -------------------------------------------------------------------------------


@db
def test_pool_advise_local_text_and_json() -> None:
    """--local: advice and capacity per database from this process, and says so."""
    select_one()
    found = json.loads(run("pool_advise", "--local", "--json"))
    assert set(found) == {"advice", "capacity", "fleet"}
    assert found["fleet"] == {"source": "local", "processes": 1}
    (default,) = [c for c in found["capacity"].values() if "default" in c["databases"]]
    assert default["backend"] == EXPECTED_BACKEND
    assert default["demand"] == (10 if BACKEND == "sqlite" else 12)  # one server on PostgreSQL
    seen = get_pool_metrics("main").checkouts  # PostgreSQL's capacity check adds one
    lines = run("pool_advise", "--local").splitlines()
    assert lines[:4] == [
        "From this process alone (--local).",
        "Advice:",
        f"  [info] main: Only {seen} checkout(s) observed so far in 1 process(es).",
        "      -> Ask again after some traffic; sizing advice needs observations.",
    ]
    capacity = lines[lines.index("Capacity:") + 1 :]
    assert capacity[0].split() == [
        *("DATABASES", "BACKEND", "PROCESSES", "DEMAND", "MAX_CONNECTIONS", "RESERVED"),
        *("HEADROOM", "NOTE"),
    ]


@db
def test_pool_advise_reads_the_fleet(fleet_cache: Any) -> None:
    """By default the advice rests on every live process, and says how many."""
    publish(1, main={"checkouts": 600, "queued": 30, "peak_checked_out": 10})
    publish(2, main={"checkouts": 400, "peak_checked_out": 10})
    lines = run("pool_advise").splitlines()
    assert lines[0].startswith("From 2 live process(es) of the fleet.")
    assert lines[2].startswith(
        "  [warning] main: 1000 checkout(s) in 2 process(es), 30 queued for a connection"
    )
    assert lines[3] == "      -> Raise POOL_SIZE from 5 to 7 so that callers stop queueing."


@db
@pytest.mark.usefixtures("unreachable_fleet")
def test_pool_advise_with_the_fleet_cache_down_gives_no_advice() -> None:
    """An unreachable cache: exit 2, one line; this process is not taken for the deployment."""
    error, out = run_failing("pool_advise")
    assert error.returncode == FLEET_UNREACHABLE
    assert str(error).startswith('The FLEET cache "down" (RedisCache) cannot be reached')
    assert "no advice" in str(error)
    assert "[" not in out


@db
def test_pool_advise_orders_advice_by_severity(monkeypatch: pytest.MonkeyPatch) -> None:
    """Critical advice comes first in the text, whatever order the library gave."""
    from mingus_sessions.management.commands import pool_advise

    def item(pool: str, severity: str) -> dict[str, Any]:
        return {"pool": pool, "severity": severity, "message": "m", "recommendation": "r"}

    def advise(local: bool = False) -> dict[str, Any]:
        return {
            "advice": [item("a", "info"), item("b", "critical"), item("c", "warning")],
            "capacity": {},
            "fleet": {"source": "fleet", "processes": 2},
        }

    monkeypatch.setattr(pool_advise, "advise_pools", advise)
    lines = run("pool_advise").splitlines()
    assert [line for line in lines if line.startswith("  [")] == [
        "  [critical] b: m",
        "  [warning] c: m",
        "  [info] a: m",
    ]


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
        ("pool_reset", "--all", "--wait", "-1"),
        ("pool_advise", "--pool", "main"),
    ],
)
def test_bad_options_are_usage_errors(command: tuple[str, ...]) -> None:
    """Bad option values exit 3 (argparse's own 2 would read as "unhealthy")."""
    error, _ = run_failing(*command)
    assert error.returncode == USAGE_ERROR
    assert str(error).startswith("Error: ")


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
        run("pool_status", "--local"),
        run("pool_status", "--local", "--json"),
        run("pool_advise", "--local"),
        run("pool_advise", "--local", "--json"),
        run("pool_reset", "--local", "--all", "--dispose", "--json"),
        run("pool_status"),
        run("pool_advise", "--json"),
    ]
    for args in (("pool_check",), ("pool_check", "--json")):
        error, out = run_failing(*args)
        outputs += [out, str(error)]
    for shown in outputs:
        assert SECRET not in shown
    assert '"backend": "postgresql+psycopg"' in outputs[1]
    assert "server limit unavailable" in outputs[2]
