"""Helpers shared by the test modules (not a test module itself)."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

import pytest
from django.conf import settings as django_settings
from sqlalchemy import String, Text, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from mingus_sessions import session_scope
from mingus_sessions._core.state import state


class Base(DeclarativeBase):
    pass


class NoteRow(Base):
    """The Django model ``tests.testapp.Note``'s table, mapped for SQLAlchemy's ORM."""

    __tablename__ = "testapp_note"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(100), unique=True)
    body: Mapped[str] = mapped_column(Text, default="")


def poll(condition: Callable[[], Any], timeout: float, what: str, step: float = 0.02) -> Any:
    """The first true value of ``condition()`` within ``timeout`` seconds; fails the test after."""
    deadline = time.monotonic() + timeout
    while True:
        found = condition()
        if found:
            return found
        if time.monotonic() >= deadline:
            pytest.fail(f"{what}: not within {timeout:g} s")
        time.sleep(step)


def wait_for_health_pings(timeout: float = 30.0) -> None:
    """Wait for health-check pings still out (one may hold a connection of a pool)."""
    for thread in [t for t in threading.enumerate() if t.name.startswith("mingus-health-")]:
        thread.join(timeout)
        assert not thread.is_alive(), f"{thread.name} still waits for the database"


def admin_connection(dbname: str = "postgres") -> Any:
    """An autocommit psycopg connection to the server of the alias "default", made directly."""
    import psycopg
    from django.db import connection

    params = connection.settings_dict
    return psycopg.connect(
        host=params["HOST"],
        port=params["PORT"],
        user=params["USER"],
        password=params["PASSWORD"] or None,
        dbname=dbname,
        autocommit=True,
    )


def closed_port() -> int:
    """A port of 127.0.0.1 that nothing listens on (a connection there is refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def add_unreachable_alias(
    monkeypatch: pytest.MonkeyPatch, alias: str, options: dict[str, Any] | None = None
) -> None:
    """A PostgreSQL ``DATABASES`` alias at a closed port of 127.0.0.1 (connection refused)."""
    add_postgresql_alias(monkeypatch, alias, closed_port(), options)


def add_postgresql_alias(
    monkeypatch: pytest.MonkeyPatch,
    alias: str,
    port: int,
    options: dict[str, Any] | None = None,
) -> None:
    """A PostgreSQL ``DATABASES`` alias on 127.0.0.1:``port``, for this test only."""
    add_alias(
        monkeypatch,
        alias,
        {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": alias,
            "USER": "postgres",
            "PASSWORD": "",
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "OPTIONS": options or {},
            # The key Django's request handler reads for every alias.
            "ATOMIC_REQUESTS": False,
        },
    )


def add_alias(monkeypatch: pytest.MonkeyPatch, alias: str, database: dict[str, Any]) -> None:
    """The ``DATABASES`` alias ``alias``, for this test only, which the test may use.

    Django's connection handler holds ``settings.DATABASES`` itself, and
    replacing it wholesale warns, so the alias is added to that dict in place.
    A test can only declare aliases that existed when it started
    (``django_db(databases=[...])``), and Django, like the pytest plugin's
    guard on the pools, refuses the others; so the guard is told that this
    test declared this one.
    """
    monkeypatch.setitem(django_settings.DATABASES, alias, database)
    guard = state.connect_guard
    if guard is None:
        return

    def declared(name: str) -> None:
        if name != alias:
            guard(name)

    monkeypatch.setattr(state, "connect_guard", declared)


#: How long a forked child may take before it counts as deadlocked.
CHILD_DEADLINE = 20.0


def run_in_a_forked_child(child: Callable[[], str]) -> str:
    """Fork; the child runs ``child()`` and reports what it returns (or its failure).

    The child is killed, and the test fails, if it has not exited within
    ``CHILD_DEADLINE`` seconds (a lock held forever, say).
    """
    read_fd, write_fd = os.pipe()
    with warnings.catch_warnings():
        # Python 3.12 warns that forking a process with threads may deadlock.
        warnings.filterwarnings("ignore", r".*fork\(\) may lead to deadlocks", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            os.close(read_fd)
            message = child()
            code = 0
        except BaseException as exc:
            message = f"error: {exc!r}"
        finally:
            try:
                os.write(write_fd, message.encode())
            finally:
                os._exit(code)
    os.close(write_fd)
    deadline = time.monotonic() + CHILD_DEADLINE
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(read_fd)
            pytest.fail("the forked child did not exit in time (deadlocked?)")
        time.sleep(0.01)
    with os.fdopen(read_fd, "rb") as pipe:
        reply = pipe.read().decode()
    assert os.waitstatus_to_exitcode(status) == 0, reply
    return reply


class Holder:
    """A thread that holds a scope (and so a connection) of ``pool`` until released."""

    def __init__(self, pool: str) -> None:
        self.pool = pool
        self.holding = threading.Event()
        self.release = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.holding.wait(10), "the holder never got its connection"

    def _run(self) -> None:
        try:
            with session_scope(self.pool) as session:
                session.execute(text("SELECT 1"))
                self.holding.set()
                self.release.wait(30)
        except BaseException as exc:
            self.error = exc
            self.holding.set()

    def stop(self) -> None:
        self.release.set()
        self.thread.join(30)
        assert not self.thread.is_alive()
        assert self.error is None, self.error
