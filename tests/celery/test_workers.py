"""DatabaseTask in real Celery workers, on Redis and RabbitMQ (docs/reliability.md C1-C5, R12, R15).

Each broker gets two workers for the module (``celery -A tests.celery_app worker``,
prefork): a shared one with two children and a solo one with one child (for the
tests that need "the same child", and the ones that kill it). They run against
the PostgreSQL test database pytest-django created (``MINGUS_TEST_USE_TEST_NAMES``),
on queues whose names are unique to this run. Tasks report through the database
(see tests/celery_app.py); nothing here reads a result backend.

The brokers are the machine's shared services: nothing here stops them. A broker
that is down is simulated with a closed port. When a broker is unreachable these
tests are skipped, except under CI (``CI`` set), where they fail.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kombu import Connection
from kombu.exceptions import OperationalError as KombuOperationalError
from sqlalchemy import text

from mingus_sessions import AfterCommitError, get_engine, session_scope
from tests import celery_app as worker_module
from tests.conftest import broker_reachable

psycopg = pytest.importorskip("psycopg")

# The django_db mark makes pytest-django create the test database; the tests
# themselves never use Django's connection (workers commit through their own).
pytestmark = [pytest.mark.postgresql, pytest.mark.django_db(databases=["default"])]

REPO = Path(__file__).resolve().parents[2]
REDIS_URL = os.environ.get("MINGUS_TEST_REDIS_URL", "redis://127.0.0.1:6379/5")
AMQP_URL = os.environ.get("MINGUS_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
BROKERS = [
    pytest.param(REDIS_URL, id="redis", marks=pytest.mark.broker(REDIS_URL)),
    pytest.param(AMQP_URL, id="rabbitmq", marks=pytest.mark.broker(AMQP_URL)),
]
RUN = uuid.uuid4().hex[:10]
PREFIX = worker_module.PREFIX
T = TypeVar("T")


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def new_key(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:8]}"


# -- workers ------------------------------------------------------------------------------


class Worker:
    """A `celery worker` subprocess in a process group of its own, and a producer app."""

    def __init__(self, broker_url: str, name: str, concurrency: int, log_path: Path) -> None:
        self.broker_url = broker_url
        self.queue = f"mingus-h8-test-{RUN}-{name}"
        self.concurrency = concurrency
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.producer = worker_module.make_app(broker_url, self.queue)

    def task(self, name: str) -> Any:
        return self.producer.tasks[PREFIX + name]

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def launch(self, test_database: str) -> None:
        from django.conf import settings

        expected = settings.DATABASES["default"]["TEST"]["NAME"]
        assert expected == test_database, (
            f"the worker would use {expected!r}, the tests created {test_database!r}"
        )
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "MINGUS_TEST_DATABASE": "postgresql",
            "MINGUS_TEST_DB_PREFIX": settings.DB_PREFIX,
            "MINGUS_TEST_USE_TEST_NAMES": "1",
            "MINGUS_CELERY_WORKER": "1",
            "MINGUS_CELERY_BROKER_URL": self.broker_url,
            "MINGUS_CELERY_QUEUE": self.queue,
            "PYTHONPATH": str(REPO),
        }
        command = [
            *(sys.executable, "-m", "celery", "-A", "tests.celery_app", "worker"),
            *("--pool=prefork", f"--concurrency={self.concurrency}", "-Q", self.queue),
            *("-n", f"{self.queue}@%h", "--without-gossip", "--without-mingle"),
            *("--without-heartbeat", "-l", "info"),
        ]
        with self.log_path.open("wb") as out:
            self.process = subprocess.Popen(
                command,
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_ready(self, timeout: float = 40.0) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if " ready." in self.log():
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        pytest.fail(f"celery worker did not start:\n{self.log()[-4000:]}", pytrace=False)

    def terminate(self) -> None:
        """Ask for a warm shutdown (SIGTERM to the worker's own process group)."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)

    def reap(self) -> None:
        """Wait for the shutdown, SIGKILL after 10 s; nothing of the group survives."""
        process = self.process
        if process is None:
            return
        self.process = None
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        # Children outliving their parent (a killed main process) die with the group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)

    def delete_queue(self) -> None:
        """Remove what this run left on the broker (the queue, its exchange, Redis keys)."""
        if self.broker_url.startswith("redis"):
            import redis

            client = redis.Redis.from_url(self.broker_url)
            try:
                for name in list(client.scan_iter(match=f"*{self.queue}*")):
                    client.delete(name)
            finally:
                client.close()
        else:
            with Connection(self.broker_url, connect_timeout=5) as conn:
                channel = conn.default_channel
                channel.queue_delete(self.queue)
                channel.exchange_delete(self.queue)


@pytest.fixture(scope="module", params=BROKERS)
def broker_url(request: pytest.FixtureRequest) -> str:
    url = str(request.param)
    if not broker_reachable(url):  # only reached under CI: elsewhere conftest skipped the test
        pytest.fail(f"the broker {url} is unreachable, and CI requires it", pytrace=False)
    return url


@pytest.fixture(scope="module")
def workers(
    broker_url: str, pg: Any, test_database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Worker]]:
    """This broker's two workers, started together and stopped together.

    "shared" has two children, for tests that neither kill a child nor need a
    particular one; "solo" has one, so consecutive tasks run on the same child
    (until a test kills it, and its replacement takes over).
    """
    logs = tmp_path_factory.mktemp("celery")
    started = {
        "shared": Worker(broker_url, "shared", 2, logs / "shared.log"),
        "solo": Worker(broker_url, "solo", 1, logs / "solo.log"),
    }
    try:
        for worker in started.values():
            worker.launch(test_database)
        for worker in started.values():
            worker.wait_ready()
        yield started
    finally:
        for worker in started.values():
            worker.terminate()
        for worker in started.values():
            worker.reap()
        for worker in started.values():
            try:
                worker.delete_queue()
            finally:
                worker.producer.close()


@pytest.fixture
def shared_worker(workers: dict[str, Worker]) -> Worker:
    return workers["shared"]


@pytest.fixture
def solo_worker(workers: dict[str, Worker]) -> Worker:
    return workers["solo"]


# -- reading what the tasks reported ------------------------------------------------------


def wait_for(
    probe: Callable[[], T], worker: Worker, what: str, timeout: float = 20.0, interval: float = 0.05
) -> T:
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            pytest.fail(
                f"timed out waiting for {what}; worker log:\n{worker.log()[-6000:]}",
                pytrace=False,
            )
        time.sleep(interval)


def attempts(pg: Any, key: str, phase: str = "start") -> list[dict[str, Any]]:
    cursor = pg.execute(
        "SELECT task, attempt, pid, backend_pid, parent_pid, parent_backend_pid, detail "
        "FROM celery_attempts WHERE key = %s AND phase = %s ORDER BY id",
        (key, phase),
    )
    names = [column.name for column in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def outcomes(pg: Any, key: str) -> list[tuple[str, str]]:
    """(state, detail) of each finished call of tasks whose first argument was `key`."""
    rows = pg.execute(
        "SELECT state, detail FROM celery_outcomes WHERE key = %s ORDER BY id", (key,)
    ).fetchall()
    return [(str(state), str(detail)) for state, detail in rows]


def effects(pg: Any, key: str) -> list[tuple[str, int]]:
    rows = pg.execute("SELECT value, pid FROM celery_effects WHERE key = %s", (key,)).fetchall()
    return [(str(value), int(pid)) for value, pid in rows]


def finished(
    pg: Any, key: str, count: int = 1, rows: int = 0
) -> Callable[[], list[tuple[str, str]]]:
    """A probe: the outcomes of `key` once `count` are final (not RETRY) and `rows` are in.

    A retried call's next run can end, on the other child, before the run that
    raised Retry has written its RETRY row: a test expecting that row says how
    many rows to wait for.
    """

    def probe() -> list[tuple[str, str]]:
        found = outcomes(pg, key)
        done = [state for state, _ in found if state != "RETRY"]
        return found if len(done) >= count and len(found) >= rows else []

    return probe


def run_to_end(worker: Worker, pg: Any, name: str, key: str, *args: Any) -> list[tuple[str, str]]:
    worker.task(name).delay(key, *args)
    return wait_for(finished(pg, key), worker, f"{name}({key}) to finish")


# -- (1) a task commits -------------------------------------------------------------------


def test_task_commits(shared_worker: Worker, pg: Any) -> None:
    key = new_key("commit")
    assert run_to_end(shared_worker, pg, "commit_effect", key, "value") == [("SUCCESS", "'value'")]
    assert effects(pg, key) == [("value", attempts(pg, key)[0]["pid"])]


# -- (2) a real transient fault is retried by Celery, the effect committed once -----------


def test_terminated_backend_is_retried_and_committed_once(shared_worker: Worker, pg: Any) -> None:
    """The first attempt's backend is terminated between two statements (57P01)."""
    key = new_key("terminated")
    shared_worker.task("killed_backend").delay(key)
    found = wait_for(finished(pg, key, rows=2), shared_worker, "the call and its retry")
    # Sorted: the retry runs on the other child, whose outcome row can land before
    # the first attempt's; the attempts table below proves the order.
    assert sorted(found) == [("RETRY", "Retry(DatabaseUnavailableError)"), ("SUCCESS", "None")]
    tries = attempts(pg, key)
    assert [row["attempt"] for row in tries] == [0, 1]
    assert tries[0]["backend_pid"] != tries[1]["backend_pid"]
    assert [value for value, _ in effects(pg, key)] == ["attempt 1"]


def test_deadlock_between_two_tasks_is_retried_and_committed_once(
    shared_worker: Worker, pg: Any
) -> None:
    """Two tasks lock two rows in opposite orders; PostgreSQL kills one (40P01), Celery retries."""
    key = new_key("deadlock")
    pg.execute(
        "INSERT INTO celery_counters (name, value) VALUES (%s, 0), (%s, 0)",
        (f"{key}-a", f"{key}-b"),
    )
    task = shared_worker.task("deadlock_pair")
    task.delay(key, "a", "b")
    task.delay(key, "b", "a")
    found = wait_for(
        finished(pg, key, count=2, rows=3), shared_worker, "both tasks and the retry to finish"
    )
    assert sorted(found) == [
        ("RETRY", "Retry(DeadlockError)"),
        ("SUCCESS", "None"),
        ("SUCCESS", "None"),
    ]
    tries = attempts(pg, f"{key}-a") + attempts(pg, f"{key}-b")
    assert sorted(row["attempt"] for row in tries) == [0, 0, 1]
    # One row per logical operation, and each counter bumped once by each committed task.
    assert len(effects(pg, f"{key}-a")) == 1
    assert len(effects(pg, f"{key}-b")) == 1
    counters = pg.execute(
        "SELECT value FROM celery_counters WHERE name IN (%s, %s)", (f"{key}-a", f"{key}-b")
    ).fetchall()
    assert sorted(value for (value,) in counters) == [2, 2]


# -- (3) C1: a task poisons its session; the next task on the same child succeeds --------


def test_poisoned_session_never_reaches_the_next_task_on_the_same_child(
    solo_worker: Worker, pg: Any
) -> None:
    taken = new_key("taken")
    pg.execute("INSERT INTO celery_effects (key, value, pid) VALUES (%s, 'first', 0)", (taken,))
    child_pids: set[int] = set()

    def next_task_succeeds() -> dict[str, Any]:
        key = new_key("next")
        assert run_to_end(solo_worker, pg, "commit_effect", key, "ok") == [("SUCCESS", "'ok'")]
        assert len(effects(pg, key)) == 1
        (row,) = attempts(pg, key)
        child_pids.add(row["pid"])
        return row

    # An IntegrityError raised out of the task: it fails once, never retried.
    before = len(attempts(pg, taken))
    assert run_to_end(solo_worker, pg, "poison_integrity", taken) == [("FAILURE", "IntegrityError")]
    assert len(attempts(pg, taken)) == before + 1
    next_task_succeeds()

    # An IntegrityError swallowed by the task, leaving its transaction failed. (It reports
    # success although nothing it wrote could commit: see the strict xfail
    # test_a_call_whose_transaction_the_server_aborted_does_not_report_success.)
    solo_worker.task("poison_swallowed").delay(taken)
    wait_for(finished(pg, taken, count=2), solo_worker, "poison_swallowed to finish")
    next_task_succeeds()

    # Its backend terminated mid-transaction (db_max_retries=0, so it fails).
    killed = new_key("killed")
    assert run_to_end(solo_worker, pg, "poison_killed", killed) == [
        ("FAILURE", "DatabaseUnavailableError")
    ]
    after_kill = next_task_succeeds()
    assert after_kill["backend_pid"] != attempts(pg, killed)[0]["backend_pid"]

    assert effects(pg, taken) == [("first", 0)]
    assert len(child_pids) == 1  # all on the same child
    assert [row["pid"] for row in attempts(pg, taken)] == [*child_pids] * 2


# -- (4) C3: the pool child is killed while the task holds its transaction -----------------


def _kill_when_holding(worker: Worker, pg: Any, key: str) -> int:
    (holding,) = wait_for(lambda: attempts(pg, key, "holding"), worker, f"{key} to hold")
    pid = int(holding["pid"])
    os.kill(pid, signal.SIGKILL)
    return pid


def test_killed_child_holding_its_transaction_is_redelivered_and_writes_once(
    solo_worker: Worker, pg: Any
) -> None:
    """acks_late + reject_on_worker_lost: redelivered; the killed attempt's write rolled back."""
    key = new_key("hold")
    solo_worker.task("hold_in_transaction").delay(key)
    (holding,) = wait_for(lambda: attempts(pg, key, "holding"), solo_worker, "hold")
    assert effects(pg, key) == []  # written, not committed
    os.kill(int(holding["pid"]), signal.SIGKILL)
    assert wait_for(finished(pg, key), solo_worker, "the redelivery") == [("SUCCESS", "None")]
    first, second = attempts(pg, key)
    assert first["pid"] == holding["pid"] != second["pid"]
    assert effects(pg, key) == [(f"pid {second['pid']}", second["pid"])]


def test_killed_child_after_commit_is_redelivered_and_the_key_prevents_a_second_write(
    solo_worker: Worker, pg: Any
) -> None:
    """Committed but not acked when killed: the redelivery finds the idempotency key taken."""
    key = new_key("committed")
    solo_worker.task("commit_then_hold").delay(key)
    pid = _kill_when_holding(solo_worker, pg, key)
    assert wait_for(finished(pg, key), solo_worker, "the redelivery") == [("SUCCESS", "None")]
    assert [row["detail"] for row in attempts(pg, key, "wrote")] == ["True", "False"]
    assert effects(pg, key) == [(f"pid {pid}", pid)]


def test_killed_child_with_default_acks_is_not_redelivered(solo_worker: Worker, pg: Any) -> None:
    """Celery's default (ack before running): a task whose child dies is not run again."""
    key = new_key("default-ack")
    solo_worker.task("hold_default_ack").delay(key)
    _kill_when_holding(solo_worker, pg, key)
    # A task sent afterwards runs on the replacement child; a redelivery would come first.
    after = new_key("after")
    assert run_to_end(solo_worker, pg, "commit_effect", after, "x") == [("SUCCESS", "'x'")]
    time.sleep(0.5)
    assert len(attempts(pg, key)) == 1
    assert outcomes(pg, key) == []


# -- (5) fork safety with no user action (R12) ---------------------------------------------


def test_children_never_use_the_connection_the_parent_opened(
    shared_worker: Worker, pg: Any
) -> None:
    key = new_key("fork")
    for _ in range(6):
        shared_worker.task("report_backend").delay(key)
    wait_for(finished(pg, key, count=6), shared_worker, "six report_backend tasks")
    rows = attempts(pg, key)
    assert len(rows) == 6
    (parent_pid,) = {row["parent_pid"] for row in rows}
    (parent_backend,) = {row["parent_backend_pid"] for row in rows}
    assert parent_pid is not None
    assert parent_backend is not None
    children: dict[int, set[int]] = {}
    for row in rows:
        children.setdefault(row["pid"], set()).add(row["backend_pid"])
    assert len(children) == 2, children  # both children ran tasks
    assert parent_pid not in children
    child_backends = [backends for backends in children.values()]
    assert parent_backend not in set().union(*child_backends)
    assert not child_backends[0] & child_backends[1]
    # The parent's own pooled connection survived its children: the main process
    # (task_received handler) still gets the same backend from its pool.
    probe = new_key("parent")
    shared_worker.task("parent_probe").delay(probe)
    (row,) = wait_for(lambda: attempts(pg, probe), shared_worker, "the parent's probe")
    assert (row["pid"], row["backend_pid"]) == (parent_pid, parent_backend)


# -- (6) C4: publish after commit, with a real worker ---------------------------------------


def test_delay_on_commit_publishes_only_after_a_commit(shared_worker: Worker, pg: Any) -> None:
    check_marker = shared_worker.task("check_marker")
    rolled_back, committed = new_key("rolled-back"), new_key("committed")
    insert = text("INSERT INTO celery_effects (key, value, pid) VALUES (:k, 'marker', 0)")
    with pytest.raises(RuntimeError), session_scope() as session:
        session.execute(insert, {"k": rolled_back})
        check_marker.delay_on_commit(rolled_back)
        raise RuntimeError("roll back")
    with session_scope() as session:
        session.execute(insert, {"k": committed})
        check_marker.delay_on_commit(committed)
    assert get_engine().pool.checkedout() == 0  # type: ignore[attr-defined]
    (row,) = wait_for(lambda: attempts(pg, committed), shared_worker, "the committed publish")
    assert row["detail"] == "marker rows 1"  # the publish came after the commit
    # A task sent afterwards has run: anything published before it has run too.
    after = new_key("after")
    run_to_end(shared_worker, pg, "commit_effect", after, "x")
    time.sleep(0.5)
    assert attempts(pg, rolled_back) == []
    assert effects(pg, rolled_back) == []
    assert len(attempts(pg, committed)) == 1
    assert outcomes(pg, committed) == [("SUCCESS", "None")]


# -- (7) C5: the broker is down when the transaction commits --------------------------------


def test_broker_down_after_a_tasks_commit_fails_the_task_and_keeps_the_commit(
    shared_worker: Worker, pg: Any
) -> None:
    """A task whose on-commit publish fails: committed, failed, and logged with the task's name."""
    key = new_key("down")
    found = run_to_end(shared_worker, pg, "publish_to_down_broker", key, closed_port())
    assert found == [("FAILURE", "AfterCommitError")]
    assert effects(pg, key) == [("committed before the publish", attempts(pg, key)[0]["pid"])]
    log = shared_worker.log()
    assert "publishing task tests.worker.down_target" in log


@pytest.mark.parametrize("scheme", ["redis", "amqp"])
def test_broker_down_after_commit_is_raised_and_logged_and_the_commit_stands(
    scheme: str, pg: Any, caplog: pytest.LogCaptureFixture
) -> None:
    port = closed_port()
    url = {
        "redis": f"redis://127.0.0.1:{port}/5",
        "amqp": f"amqp://guest:guest@127.0.0.1:{port}//",
    }[scheme]
    down = worker_module.make_app(
        url,
        f"mingus-test-{RUN}-down",
        broker_connection_retry=False,
        broker_transport_options={"max_retries": 1, "interval_start": 0, "interval_step": 0.1},
        task_publish_retry_policy={"max_retries": 1, "interval_start": 0, "interval_step": 0.1},
    )
    key = new_key(f"down-{scheme}")
    started = time.monotonic()
    try:
        with (
            caplog.at_level(logging.ERROR, logger="mingus_sessions"),
            pytest.raises(AfterCommitError) as raised,
            session_scope() as session,
        ):
            session.execute(
                text("INSERT INTO celery_effects (key, value, pid) VALUES (:k, 'kept', 0)"),
                {"k": key},
            )
            down.tasks[PREFIX + "check_marker"].delay_on_commit(key)
    finally:
        down.close()
    assert time.monotonic() - started < 5.0
    assert isinstance(raised.value.__cause__, KombuOperationalError)
    assert effects(pg, key) == [("kept", 0)]
    (record,) = [r for r in caplog.records if r.name == "mingus_sessions" and r.levelno >= 40]
    assert "publishing task tests.worker.check_marker" in record.getMessage()
    assert get_engine().pool.checkedout() == 0  # type: ignore[attr-defined]
