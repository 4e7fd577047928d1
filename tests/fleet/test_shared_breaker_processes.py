"""``CIRCUIT_BREAKER["SHARED"]`` across real processes on Redis: one opens, all fail fast, one
trial for the fleet.

Three processes (``tests/fleet/breaker_child.py``) have a pool on a port of the
test's own: a TCP gate that counts every connection it accepts (each is a
connection attempt of some process) and either closes it at once (the database
is down) or relays it to the PostgreSQL server (it is back). Process A opens
the breaker after 2 failures; B and C, whose own thresholds are far away
(100), learn of it through the FLEET cache.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fleet.processes import REPO
from tests.fleet.test_fleet_processes import REDIS, redis_reachable

RECOVERY = 3.0
READ_INTERVAL = 1.0
#: Process scheduling and pipes on a loaded CI machine, over the read interval.
SLACK = 0.5
#: Seconds the gate holds a connection before closing it while the database is down.
HOLD = 0.3


class Gate:
    """A TCP listener that counts connections, then closes them (down) or relays them (up)."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.accepted = 0
        self.up = False
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._open: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def count(self) -> int:
        with self._lock:
            return self.accepted

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            with self._lock:
                self.accepted += 1
                up = self.up
            if not up:
                # Held a moment before it is refused, as a server that is slow to
                # fail: the trial is still out while the other processes ask.
                threading.Timer(HOLD, client.close).start()
                continue
            server = socket.create_connection(self.upstream)
            self._open += [client, server]
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=_relay, args=(source, sink), daemon=True).start()

    def close(self) -> None:
        self._listener.close()
        for sock in self._open:
            with contextlib.suppress(OSError):
                sock.close()


def _relay(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


class Child:
    """One process of the fleet, answering ``call`` with one scope's result."""

    def __init__(self, name: str, env: dict[str, str], threshold: int, log: Path) -> None:
        self.name = name
        self.log = log
        self._log_file = log.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.fleet.breaker_child"],
            cwd=REPO,
            env={**env, "BREAKER_THRESHOLD": str(threshold)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log_file,
            text=True,
            start_new_session=True,
        )
        assert "ready" in self._answer(), self.stderr()

    def call(self) -> str:
        self.ask()
        return self.result()

    def ask(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("call\n")
        self.process.stdin.flush()

    def result(self) -> str:
        return str(self._answer()["result"])

    def _answer(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line, f"{self.name} ended: {self.stderr()}"
        found: dict[str, Any] = json.loads(line)
        return found

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            if self.process.stdin is not None:
                self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._log_file.close()


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[tuple[Gate, dict[str, Child]]]:
    if not redis_reachable():
        pytest.fail(f"Redis at {REDIS} is not reachable (the fleet's cache)", pytrace=False)
    pytest.importorskip("psycopg")
    gate = Gate((os.environ.get("PGHOST", "127.0.0.1"), int(os.environ.get("PGPORT", "5432"))))
    prefix = f"mingus-breaker-test-{uuid.uuid4().hex[:10]}"
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "BREAKER_DB_PORT": str(gate.port),
        "BREAKER_RECOVERY": str(RECOVERY),
        "MINGUS_FLEET_REDIS_URL": f"{REDIS}/7",
        "MINGUS_FLEET_KEY_PREFIX": prefix,
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)
    children: dict[str, Child] = {}
    try:
        for name, threshold in (("A", 2), ("B", 100), ("C", 100)):
            children[name] = Child(name, env, threshold, tmp_path / f"{name}.log")
        yield gate, children
    finally:
        for child in children.values():
            child.stop()
        gate.close()
        _forget_keys(f"{REDIS}/7", prefix)


def _forget_keys(url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        for name in list(client.scan_iter(match=f"{prefix}:*")):
            client.delete(name)
    finally:
        client.close()


def until_all(children: list[Child], result: str, timeout: float) -> dict[str, list[str]]:
    """Every child calls in turn, 20 ms apart, until each answered ``result``; their answers."""
    answers: dict[str, list[str]] = {child.name: [] for child in children}
    deadline = time.monotonic() + timeout
    waiting = list(children)
    while waiting:
        assert time.monotonic() < deadline, f"not all {result} in {timeout} s: {answers}"
        for child in list(waiting):
            answers[child.name].append(child.call())
            if answers[child.name][-1] == result:
                waiting.remove(child)
        time.sleep(0.02)
    return answers


def until_one(children: list[Child], result: str, timeout: float) -> dict[str, list[str]]:
    """The children call at once, every 20 ms, until one answers ``result``; their answers."""
    answers: dict[str, list[str]] = {child.name: [] for child in children}
    deadline = time.monotonic() + timeout
    while True:
        assert time.monotonic() < deadline, f"no {result} in {timeout} s: {answers}"
        for child in children:
            child.ask()
        for child in children:
            answers[child.name].append(child.result())
        if any(said[-1] == result for said in answers.values()):
            return answers
        time.sleep(0.02)


def test_one_process_opens_the_fleet_and_one_process_makes_the_trial(
    fleet: tuple[Gate, dict[str, Child]],
) -> None:
    gate, children = fleet
    a, b, c = children["A"], children["B"], children["C"]

    # B's first scope connects (and reads the shared state: nothing yet).
    assert b.call() == "failed"
    assert gate.count() == 1

    # A's two failures open the breaker for the fleet.
    assert [a.call(), a.call()] == ["failed", "failed"]
    opened = time.monotonic()
    assert gate.count() == 3

    # C never connected: it fails fast at once. B fails fast within a read interval,
    # each connection attempt it makes before then being one of its own.
    assert c.call() == "open"
    answers = until_all([b], "open", timeout=READ_INTERVAL + SLACK + 1)
    assert time.monotonic() - opened <= READ_INTERVAL + SLACK
    assert set(answers["B"][:-1]) <= {"failed"}
    before = gate.count()
    assert before == 3 + len(answers["B"]) - 1
    for _ in range(5):
        assert [a.call(), b.call(), c.call()] == ["open"] * 3
    assert gate.count() == before

    # The recovery timeout passes: the three processes call as often as they can until
    # one makes the trial (it fails: the database is still down); then, for a while
    # shorter than the recovery timeout, nobody makes another.
    time.sleep(max(opened + RECOVERY - time.monotonic(), 0))
    answers = until_one([a, b, c], "failed", timeout=RECOVERY)
    trial_at = time.monotonic()
    assert sum(said.count("failed") for said in answers.values()) == 1
    assert gate.count() == before + 1
    while time.monotonic() - trial_at < RECOVERY - READ_INTERVAL - SLACK:
        for child in (a, b, c):
            assert child.call() == "open"
        time.sleep(0.02)
    assert gate.count() == before + 1

    # The database comes back: at the next recovery, one trial connects and closes the
    # breaker; every process is closed within a read interval of it.
    gate.up = True
    answers = until_one([a, b, c], "ok", timeout=RECOVERY + SLACK)
    closed_at = time.monotonic()
    assert {said for each in answers.values() for said in each} == {"open", "ok"}
    assert gate.count() == before + 2  # the failed trial, and this one
    answers = until_all([a, b, c], "ok", timeout=READ_INTERVAL + SLACK)
    assert time.monotonic() - closed_at <= READ_INTERVAL + SLACK
    assert all("failed" not in each for each in answers.values())
    # Then each process connects its own pool (a pool of one), once.
    assert gate.count() == before + 2 + 2
    for child in (a, b, c):
        assert child.call() == "ok"
