"""The owned cluster's controls, and the settings every fault test starts from.

These tests stop, hang (SIGSTOP) and restart their PostgreSQL server, so they
only ever run on a cluster that ``scripts/test_faults.sh`` created for the run:
it exports ``MINGUS_FAULTS_PGDATA`` (the data directory) and points
``PGHOST``/``PGPORT`` at it. Without that variable every test here is skipped,
so ``make test`` (SQLite, or the machine's shared PostgreSQL) never hurts a
server it does not own.
"""

from __future__ import annotations

import contextlib
import copy
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.db import connections

from mingus_sessions import get_engine
from tests.helpers import wait_for_health_pings

PGDATA = os.environ.get("MINGUS_FAULTS_PGDATA", "")
HERE = Path(__file__).resolve().parent
PG_CLUSTER = HERE.parent.parent / "scripts" / "pg_cluster.sh"
SKIP_REASON = (
    "needs a PostgreSQL cluster the run owns: run `bash scripts/test_faults.sh` "
    "(MINGUS_FAULTS_PGDATA is unset)"
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip this package, and only it, when no owned cluster was started."""
    if PGDATA:
        return
    skip = pytest.mark.skip(reason=SKIP_REASON)
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(skip)


class Cluster:
    """Stop, start and hang the run's own PostgreSQL cluster (``scripts/pg_cluster.sh``).

    Every change closes Django's connections: after a restart they point at
    backends that no longer exist, and pytest-django's teardown (which flushes
    the tables through them) would otherwise fail on a dead socket.
    """

    def __init__(self, data_dir: str) -> None:
        self.data_dir = data_dir
        self.port = Path(f"{data_dir}.port").read_text().strip()
        self.paused: list[int] = []

    def _run(self, *args: str) -> str:
        result = subprocess.run(
            ["bash", str(PG_CLUSTER), *args],
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
        assert result.returncode == 0, f"pg_cluster.sh {args[0]}: {result.stderr}"
        return result.stdout

    def running(self) -> bool:
        return Path(self.data_dir, "postmaster.pid").exists()

    def postmaster_pid(self) -> int:
        return int(self._run("pid", self.data_dir).strip())

    def children(self) -> list[int]:
        """The postmaster's children: backends and auxiliary processes."""
        found = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(self.postmaster_pid())],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        return [int(pid) for pid in found.split()]

    def stop(self) -> None:
        """Fast shutdown: backends are terminated, the port is closed (connections refused)."""
        self.resume()
        self._run("stop", self.data_dir)
        _close_django_connections()

    def start(self) -> None:
        """Start on the same port; returns once the server accepts connections."""
        self._run("start", self.data_dir, self.port)
        _close_django_connections()

    def restart(self) -> None:
        self.stop()
        self.start()

    def pause(self, *, backends: bool) -> None:
        """SIGSTOP the postmaster (new connections hang), and with ``backends`` its children."""
        pids = [self.postmaster_pid(), *(self.children() if backends else [])]
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
            self.paused.append(pid)

    def resume(self) -> None:
        """SIGCONT whatever :meth:`pause` stopped (safe to call twice)."""
        while self.paused:
            pid = self.paused.pop()
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def _close_django_connections() -> None:
    for conn in connections.all(initialized_only=True):
        conn.close()


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    """The owned cluster; whatever the test did to it, it is resumed and running afterwards."""
    found = Cluster(PGDATA)
    try:
        yield found
    finally:
        found.resume()
        if not found.running():
            found.start()
        _close_django_connections()
        wait_for_health_pings()


def configure(settings: Any, *, breaker: dict[str, Any] | None = None, **pools: Any) -> None:
    """``MINGUS_SESSIONS`` as the suite has it, with ``pools`` merged in and ``breaker`` set."""
    config = copy.deepcopy(django_settings.MINGUS_SESSIONS)
    for name, values in pools.items():
        config["POOLS"][name] = {**config["POOLS"].get(name, {}), **values}
    if breaker is not None:
        config["CIRCUIT_BREAKER"] = {**config["CIRCUIT_BREAKER"], **breaker}
    settings.MINGUS_SESSIONS = config


def checked_out(pool: str | None = None) -> int:
    return int(get_engine(pool).pool.checkedout())  # type: ignore[attr-defined]
