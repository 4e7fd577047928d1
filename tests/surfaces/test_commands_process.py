"""The pool commands as real processes: the demo's ``manage.py`` on an SQLite file of this
module's own, and on a PostgreSQL URL nobody listens on.

The demo's FLEET cache is whatever the demo settings name; a command never
publishes itself, so with no server running the fleet it reads is empty, and
it says so rather than showing its own idle pools.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import closed_port
from tests.surfaces.commands import SECRET, USAGE_ERROR

REPO = Path(__file__).resolve().parents[2]
MANAGE = REPO / "manage.py"


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
    result = manage(demo_env, "pool_check", "--local", "--timeout", "3")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "main: healthy (ok)",
        "celery: healthy (ok)",
        "analytics: healthy (ok)",
        "overall: healthy",
    ]
    result = manage(demo_env, "pool_check", "--timeout", "3")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[3].startswith("fleet: 0 live process(es)")


def test_subprocess_pool_check_closed_port_exits_2(demo_env: dict[str, str]) -> None:
    pytest.importorskip("psycopg")
    env = {
        **demo_env,
        "DATABASE_URL": f"postgresql://postgres:{SECRET}@127.0.0.1:{closed_port()}/x",
    }
    started = time.monotonic()
    result = manage(env, "pool_check", "--local", "--timeout", "3")
    assert time.monotonic() - started < 30  # interpreter start-up included
    assert result.returncode == 2, result.stderr
    assert result.stdout.splitlines()[-1] == "overall: unhealthy"
    assert "CommandError: unhealthy: main unhealthy (unreachable: refused)" in result.stderr
    assert SECRET not in result.stdout + result.stderr


def test_subprocess_pool_status_json_parses(demo_env: dict[str, str]) -> None:
    """--local shows this process's pools; the default, the fleet, which no process joined."""
    result = manage(demo_env, "pool_status", "--local", "--json")
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert list(found["pools"]) == ["main", "celery", "analytics"]
    assert found["pools"]["analytics"]["database"] == "replica"
    result = manage(demo_env, "pool_status", "--json")
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert (found["source"], found["processes"], found["pools"]) == ("fleet", [], {})


def test_subprocess_pool_reset_all_exits_0(demo_env: dict[str, str]) -> None:
    result = manage(demo_env, "pool_reset", "--all", "--dispose", "--json")
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["reset"] == found["disposed"] == ["main", "celery", "analytics"]
    assert found["processes"] == {"applied": [], "pending": [], "gone": []}


def test_subprocess_pool_advise_exits_0(demo_env: dict[str, str]) -> None:
    result = manage(demo_env, "pool_advise", "--local")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("From this process alone (--local).\nAdvice:\n")
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
