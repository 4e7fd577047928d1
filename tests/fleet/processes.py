"""The processes of a deployment, started for real: gunicorn with its workers, a Celery worker.

Each runs in a process group of its own (``start_new_session``), is stopped by
its own pid (SIGTERM, then SIGKILL of its group after a grace period), and
writes its output to a log the failures quote.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Started:
    """A command in a process group of its own, with its output in ``log_path``."""

    def __init__(self, command: list[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        with log_path.open("wb") as out:
            self.process = subprocess.Popen(
                command,
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except FileNotFoundError:
            return ""

    def children(self) -> list[int]:
        """The pids of this process's children (gunicorn's workers, Celery's pool)."""
        found = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(self.pid)],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        return sorted(int(pid) for pid in found.split())

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM to the process (a warm shutdown), then SIGKILL to its whole group."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            # A process that does not stop in time is killed with its group below.
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=grace)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)


def gunicorn(env: dict[str, str], workers: int, port: int, log_path: Path) -> Started:
    """``gunicorn`` serving the settings in ``env`` with ``workers`` sync workers."""
    return Started(
        [
            *(sys.executable, "-m", "gunicorn", "django.core.wsgi:get_wsgi_application()"),
            *("--workers", str(workers), "--worker-class", "sync"),
            *("--bind", f"127.0.0.1:{port}", "--log-level", "warning", "--graceful-timeout", "5"),
        ],
        env,
        log_path,
    )


def celery_worker(env: dict[str, str], queue: str, log_path: Path) -> Started:
    """A prefork Celery worker with one child on ``queue`` (tests/fleet/celery_fleet.py)."""
    return Started(
        [
            *(sys.executable, "-m", "celery", "-A", "tests.fleet.celery_fleet", "worker"),
            *("--pool=prefork", "--concurrency=1", "-Q", queue, "-n", f"{queue}@%h"),
            *("--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "info"),
        ],
        env,
        log_path,
    )


def get(url: str, *, token: str | None = None, timeout: float = 10.0) -> tuple[int, bytes]:
    """GET ``url``: (status, body), an error status included; 0 when nothing answers."""
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as error:
        return int(error.code), error.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


def get_json(url: str, *, token: str | None = None) -> Any:
    status, body = get(url, token=token)
    assert status == 200, (status, body[:500])
    return json.loads(body)


def wait_for(predicate: Any, timeout: float, what: str, *logs: Started) -> Any:
    """Poll ``predicate`` until it returns something true; fail with the logs after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        found = predicate()
        if found:
            return found
        if time.monotonic() > deadline:
            quoted = "\n\n".join(f"--- {p.process.args!r}\n{p.log()}" for p in logs)
            raise AssertionError(f"timed out waiting for {what}\n{quoted}")
        time.sleep(0.05)
