"""Nothing lost across a restart: writers keep committing while the owned cluster restarts.

Each write is one scope inserting a note with a unique title. Its outcome, as
the caller saw it, decides what the table must hold:

- the scope exited cleanly: the row is there exactly once;
- the scope raised before its block ended (the INSERT or the connect failed):
  the row is absent;
- the scope raised after its block ended, i.e. while committing: the package
  raises ``DatabaseUnavailableError`` or ``TransactionError`` there, and
  nothing in the error says whether the server had committed before the
  connection died. Such a row may be there (once) or not; the test counts
  these separately instead of pretending the outcome is known.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import Counter
from typing import Any

import pytest
from sqlalchemy import text

from mingus_sessions import SessionError, get_circuit_breaker, session_scope
from mingus_sessions._core.state import state
from tests.faults.conftest import Cluster, checked_out, configure
from tests.helpers import poll

pytestmark = [
    pytest.mark.postgresql,
    pytest.mark.django_db(transaction=True, databases=["default", "other"]),
]

WRITERS = 4
#: Successful writes each writer needs before, and again after, the restart.
QUOTA = 20


@dataclasses.dataclass
class Outcomes:
    """What each writer's callers saw, per title."""

    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    committed: list[str] = dataclasses.field(default_factory=list)
    failed: list[str] = dataclasses.field(default_factory=list)
    unknown: list[str] = dataclasses.field(default_factory=list)
    errors: list[BaseException] = dataclasses.field(default_factory=list)
    at_commit_errors: list[BaseException] = dataclasses.field(default_factory=list)

    def record(self, title: str, error: BaseException | None, at_commit: bool) -> None:
        with self.lock:
            if error is None:
                self.committed.append(title)
                return
            self.errors.append(error)
            if at_commit:
                self.unknown.append(title)
                self.at_commit_errors.append(error)
            else:
                self.failed.append(title)

    def count(self, prefix: str) -> int:
        with self.lock:
            return sum(t.startswith(prefix) for t in self.committed)


def write_once(title: str, outcomes: Outcomes) -> None:
    """One scope inserting ``title``; record whether it committed, failed, or failed at COMMIT."""
    at_commit = False
    try:
        with session_scope() as s:
            s.execute(text("INSERT INTO testapp_note (title, body) VALUES (:t, '')"), {"t": title})
            at_commit = True
    except Exception as exc:  # every failure is an outcome to check
        outcomes.record(title, exc, at_commit)
    else:
        outcomes.record(title, None, False)


def writer(number: int, outcomes: Outcomes, stop: threading.Event) -> None:
    sequence = 0
    while not stop.is_set():
        write_once(f"w{number}-{sequence:05d}", outcomes)
        sequence += 1
        stop.wait(0.005)


def stored_titles() -> Counter[str]:
    with session_scope() as s:
        return Counter(s.execute(text("SELECT title FROM testapp_note")).scalars())


@pytest.fixture(autouse=True)
def _settings(settings: Any) -> None:
    configure(
        settings,
        breaker={"FAILURE_THRESHOLD": 3, "RECOVERY_TIMEOUT": 0.2},
        main={"POOL_SIZE": WRITERS, "MAX_OVERFLOW": 0, "CONNECT_ARGS": {"connect_timeout": 5}},
    )


def run_writers_through_restart(cluster: Cluster) -> Outcomes:
    outcomes = Outcomes()
    stop = threading.Event()
    threads = [
        threading.Thread(target=writer, args=(n, outcomes, stop), name=f"writer-{n}")
        for n in range(WRITERS)
    ]
    for thread in threads:
        thread.start()
    try:
        for n in range(WRITERS):
            poll(lambda n=n: outcomes.count(f"w{n}-") >= QUOTA, 30, f"writer {n} before restart")
        before = {n: outcomes.count(f"w{n}-") for n in range(WRITERS)}
        cluster.restart()
        for n in range(WRITERS):
            poll(
                lambda n=n: outcomes.count(f"w{n}-") >= before[n] + QUOTA,
                60,
                f"writer {n} after restart",
            )
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    assert not any(thread.is_alive() for thread in threads)
    return outcomes


def test_every_write_seen_to_succeed_survives_a_restart_exactly_once(cluster: Cluster) -> None:
    """Writers straddle a fast restart: committed rows are there once, failed ones absent,
    commit-time failures at most once; every failure is our typed error; the pool is clean."""
    outcomes = run_writers_through_restart(cluster)

    assert outcomes.errors, "the restart interrupted no write: the test proved nothing"
    untyped = [e for e in outcomes.errors if not isinstance(e, SessionError)]
    assert untyped == [], untyped
    assert all(e.pool == "main" for e in outcomes.errors if isinstance(e, SessionError))
    # Every statement had run: a failure now is the COMMIT's, whose outcome is unknown.
    told = [type(e).__name__ for e in outcomes.at_commit_errors]
    assert set(told) <= {"CommitOutcomeUnknownError"}, told

    stored = stored_titles()
    assert max(stored.values()) == 1  # the unique index would refuse a second copy anyway
    missing = [t for t in outcomes.committed if stored[t] != 1]
    assert missing == [], f"lost: {missing}"
    resurrected = [t for t in outcomes.failed if stored[t]]
    assert resurrected == [], f"a failed write is stored: {resurrected}"
    known = set(outcomes.committed) | set(outcomes.failed) | set(outcomes.unknown)
    assert set(stored) <= known, "rows nobody wrote"
    assert len(known) == len(outcomes.committed) + len(outcomes.failed) + len(outcomes.unknown)

    assert get_circuit_breaker("main").state == "closed"
    assert checked_out() == 0
    assert state.sessions.active_sessions == 0
    with session_scope() as s:
        assert s.execute(text("SELECT 1")).scalar_one() == 1
