"""Real faults on a PostgreSQL server the tests may hurt (docs/reliability.md: R1, R2, R10, R12,
R15).

Backends are hurt from an admin connection made with psycopg directly. A pool's
backends are found in ``pg_stat_activity`` by ``application_name`` (which the
engines set to ``mingus_sessions:<pool>``) *and* ``datname`` (this run's test
database): other runs share the server, and their backends are never touched.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection as MPConnection
from pathlib import Path
from typing import Any

import pytest
from django.db import connections
from sqlalchemy import event, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session

from mingus_sessions import (
    AuthenticationError,
    CommitOutcomeUnknownError,
    DatabaseUnavailableError,
    DeadlockError,
    LockTimeoutError,
    SerializationError,
    SessionError,
    TransactionError,
    execute_with_retry,
    get_engine,
    session_scope,
)
from mingus_sessions._core.state import state
from tests.helpers import run_in_a_forked_child

psycopg = pytest.importorskip("psycopg")

pytestmark = [
    pytest.mark.postgresql,
    pytest.mark.django_db(transaction=True, databases=["default", "other"]),
]

REPO = Path(__file__).resolve().parents[2]
AUTH_ROLE = "mingus_h4_auth"


def _pool_backends(
    admin: Any, db_name: str, pool: str = "main", state: str | None = None
) -> set[int]:
    query = "SELECT pid FROM pg_stat_activity WHERE application_name = %s AND datname = %s"
    params: list[Any] = [f"mingus_sessions:{pool}", db_name]
    if state is not None:
        query += " AND state = %s"
        params.append(state)
    return {row[0] for row in admin.execute(query, params).fetchall()}


def _terminate(admin: Any, pid: int) -> None:
    # The second argument makes the server wait until the backend is gone, so
    # the next statement of the victim cannot race the signal.
    (done,) = admin.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,)).fetchone()
    assert done is True


def _backend_pid(session: Session) -> int:
    return int(session.execute(text("SELECT pg_backend_pid()")).scalar_one())


def _count_notes(title: str) -> int:
    with session_scope() as s:
        return int(
            s.execute(
                text("SELECT count(*) FROM testapp_note WHERE title = :t"), {"t": title}
            ).scalar_one()
        )


def _insert_note(session: Session, title: str, body: str = "") -> None:
    session.execute(
        text("INSERT INTO testapp_note (title, body) VALUES (:t, :b)"), {"t": title, "b": body}
    )


# -- R1: idle pooled connections killed --------------------------------------------------


def test_r1_idle_backends_killed_are_replaced_without_errors(admin: Any, db_name: str) -> None:
    """With pre-ping, killing every idle backend of the pool costs the next 20 scopes no error."""
    engine = get_engine()
    held = [engine.connect() for _ in range(3)]
    try:
        old = {int(c.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()) for c in held}
    finally:
        for c in held:
            c.close()
    assert len(old) == 3
    assert engine.pool.checkedout() == 0

    idle = _pool_backends(admin, db_name, state="idle")
    assert old <= idle
    for pid in idle:
        _terminate(admin, pid)
    assert not _pool_backends(admin, db_name) & old

    seen = set()
    for _ in range(20):
        with session_scope() as s:
            seen.add(_backend_pid(s))
    assert seen
    assert not seen & old
    assert engine.pool.checkedout() == 0
    # Every live backend of the pool is one the scopes used: nothing leaked.
    assert _pool_backends(admin, db_name) == seen
    assert engine.pool.checkedin() == len(seen)
    stats = state.sessions.snapshot()
    assert stats["failed_sessions"] == 0
    assert stats["committed_transactions"] == 20
    assert stats["active_sessions"] == 0


# -- R2: connection killed mid-transaction ------------------------------------------------


def test_r2_backend_killed_mid_scope_raises_our_error_and_rolls_back(
    admin: Any, db_name: str
) -> None:
    """A backend killed between two statements raises DatabaseUnavailableError; nothing commits."""
    engine = get_engine()
    victims: list[int] = []

    def scope() -> None:
        with session_scope() as s:
            _insert_note(s, "r2")
            victims.append(_backend_pid(s))
            _terminate(admin, victims[0])
            s.execute(text("SELECT 1"))

    with pytest.raises(DatabaseUnavailableError) as info:
        scope()
    (victim,) = victims
    error = info.value
    assert type(error).__module__.startswith("mingus_sessions")
    assert isinstance(error.__cause__, sa_exc.OperationalError | sa_exc.DBAPIError)
    assert error.__cause__.connection_invalidated is True
    assert error.pool == "main"
    assert error.transient is True
    assert '"main"' in str(error)

    assert _count_notes("r2") == 0
    with session_scope() as s:
        assert _backend_pid(s) != victim
    assert engine.pool.checkedout() == 0
    assert victim not in _pool_backends(admin, db_name)


# -- R10: failure at commit ----------------------------------------------------------------


@pytest.fixture
def deferred_tables() -> Iterator[None]:
    """Tables whose unique and foreign-key constraints are only checked at COMMIT."""
    with get_engine().begin() as c:
        c.exec_driver_sql(
            "CREATE TABLE h4_deferred_unique (id integer PRIMARY KEY, k integer NOT NULL, "
            "CONSTRAINT h4_deferred_unique_k UNIQUE (k) DEFERRABLE INITIALLY DEFERRED)"
        )
        c.exec_driver_sql("CREATE TABLE h4_deferred_parent (id integer PRIMARY KEY)")
        c.exec_driver_sql(
            "CREATE TABLE h4_deferred_child (id integer PRIMARY KEY, parent_id integer "
            "REFERENCES h4_deferred_parent (id) DEFERRABLE INITIALLY DEFERRED)"
        )
    yield
    with get_engine().begin() as c:
        c.exec_driver_sql(
            "DROP TABLE IF EXISTS h4_deferred_child, h4_deferred_parent, h4_deferred_unique"
        )


@pytest.mark.usefixtures("deferred_tables")
@pytest.mark.parametrize(
    ("statement", "table", "sqlstate"),
    [
        ("INSERT INTO h4_deferred_unique VALUES (1, 7), (2, 7)", "h4_deferred_unique", "23505"),
        ("INSERT INTO h4_deferred_child VALUES (1, 99)", "h4_deferred_child", "23503"),
    ],
    ids=["unique", "foreign_key"],
)
def test_r10a_deferred_constraint_fails_at_commit_untranslated(
    statement: str, table: str, sqlstate: str
) -> None:
    """A deferred constraint violated at COMMIT raises an untranslated IntegrityError, no commit."""
    engine = get_engine()
    reached_end = False

    def scope() -> None:
        nonlocal reached_end
        with session_scope() as s:
            _insert_note(s, "r10a")
            s.execute(text(statement))  # accepted: the check is deferred to COMMIT
            reached_end = True

    with pytest.raises(sa_exc.IntegrityError) as info:
        scope()
    assert reached_end
    assert not isinstance(info.value, SessionError)
    assert info.value.orig.sqlstate == sqlstate

    assert _count_notes("r10a") == 0
    with session_scope() as s:
        assert s.execute(text(f"SELECT count(*) FROM {table}")).scalar_one() == 0
    assert engine.pool.checkedout() == 0


def _kill_in_before_commit(admin: Any) -> Callable[[Session], None]:
    def arm(session: Session) -> None:
        pid = _backend_pid(session)

        def before_commit(_session: Session) -> None:
            _terminate(admin, pid)

        event.listen(session, "before_commit", before_commit)

    return arm


def _kill_after_last_statement(admin: Any) -> Callable[[Session], None]:
    def arm(session: Session) -> None:
        _terminate(admin, _backend_pid(session))

    return arm


@pytest.mark.parametrize(
    "arm_factory",
    [_kill_in_before_commit, _kill_after_last_statement],
    ids=["before_commit_event", "after_last_statement"],
)
def test_r10b_backend_killed_before_commit_is_never_a_success(
    admin: Any, arm_factory: Callable[[Any], Callable[[Session], None]]
) -> None:
    """A backend terminated right before COMMIT makes the scope raise; the row is not there.

    From the client, a COMMIT whose connection broke cannot be told from one
    whose answer was lost: the error says the outcome is unknown and is never
    retried. (Here the server had aborted the transaction, so the row is absent.)
    """
    engine = get_engine()
    arm = arm_factory(admin)

    def scope() -> None:
        with session_scope() as s:
            _insert_note(s, "r10b")
            arm(s)

    with pytest.raises(CommitOutcomeUnknownError) as info:
        scope()
    assert isinstance(info.value, TransactionError)
    assert not info.value.transient
    assert info.value.pool == "main"
    assert isinstance(info.value.__cause__, sa_exc.DBAPIError)

    assert _count_notes("r10b") == 0
    with session_scope() as s:
        _insert_note(s, "r10b-after")
    assert _count_notes("r10b-after") == 1
    assert engine.pool.checkedout() == 0


# -- R12: fork -------------------------------------------------------------------------------


def _parent_pid_with_pooled_connection() -> int:
    with session_scope() as s:
        pid = _backend_pid(s)
    pool = get_engine().pool
    assert pool.checkedout() == 0
    assert pool.checkedin() == 1
    return pid


def _assert_parent_reuses(parent_pid: int) -> None:
    with session_scope() as s:
        assert _backend_pid(s) == parent_pid
        assert s.execute(text("SELECT count(*) FROM testapp_note")).scalar_one() == 0
    assert get_engine().pool.checkedout() == 0


def test_r12_os_fork_child_opens_its_own_backend() -> None:
    """After os.fork() the child's scope gets its own backend and the parent's keeps working."""
    parent_pid = _parent_pid_with_pooled_connection()

    def child() -> str:  # pragma: no cover - runs in the child
        with session_scope() as s:
            return str(_backend_pid(s))

    reply = run_in_a_forked_child(child)
    assert int(reply) != parent_pid
    _assert_parent_reuses(parent_pid)


def _mp_child(conn: MPConnection) -> None:
    try:
        with session_scope() as s:
            conn.send(_backend_pid(s))
    finally:
        conn.close()


def test_r12_multiprocessing_fork_child_exit_leaves_parent_connection_alive() -> None:
    """A multiprocessing "fork" child runs a scope and exits; the parent's backend survives."""
    parent_pid = _parent_pid_with_pooled_connection()
    ctx = multiprocessing.get_context("fork")
    receiver, sender = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_mp_child, args=(sender,))
    try:
        process.start()
        sender.close()
        assert receiver.poll(30), "the child sent nothing"
        child_pid = receiver.recv()
        process.join(30)
        assert process.exitcode == 0
    finally:
        receiver.close()
        if process.is_alive():  # pragma: no cover - only when the child hangs
            process.kill()
            process.join()
        process.close()
    assert child_pid != parent_pid
    _assert_parent_reuses(parent_pid)


# multiprocessing's children leave through os._exit() after their finalizers, so
# neither variant above shuts an interpreter down. This script forks a child that
# ends with sys.exit(): atexit handlers run and every object, the inherited
# pooled connection included, is finalized before the child's process ends.
_SHUTDOWN_SCRIPT = """
import json, os, sys
import django
django.setup()
from django.db import connections
connections.settings["default"]["NAME"] = sys.argv[1]
connections.settings["other"]["NAME"] = sys.argv[2]
from sqlalchemy import text
from mingus_sessions import get_engine, session_scope

def backend_pid():
    with session_scope() as s:
        return s.execute(text("SELECT pg_backend_pid()")).scalar_one()

parent = backend_pid()
read_fd, write_fd = os.pipe()
child = os.fork()
if child == 0:
    os.close(read_fd)
    with os.fdopen(write_fd, "w") as pipe:
        pipe.write(str(backend_pid()))
    sys.exit(0)
os.close(write_fd)
with os.fdopen(read_fd) as pipe:
    child_pid = int(pipe.read())
_, status = os.waitpid(child, 0)
after = backend_pid()
get_engine().dispose()
print(json.dumps({"parent": parent, "child": child_pid, "after": after,
                  "child_exit": os.waitstatus_to_exitcode(status)}))
"""


def test_r12_child_interpreter_shutdown_leaves_parent_connection_alive() -> None:
    """A forked child whose interpreter shuts down normally never ends the parent's backend."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "MINGUS_TEST_DATABASE": "postgresql",
        "PYTHONWARNINGS": "error",
    }
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            _SHUTDOWN_SCRIPT,
            connections["default"].settings_dict["NAME"],
            connections["other"].settings_dict["NAME"],
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["child_exit"] == 0
    assert found["child"] != found["parent"]
    assert found["after"] == found["parent"]


# -- R15: deadlock, serialization failure, lock timeout ----------------------------------------


@pytest.fixture
def two_rows() -> None:
    """Two notes, "a" and "b", committed before the test's threads start."""
    with session_scope() as s:
        _insert_note(s, "a", "on")
        _insert_note(s, "b", "on")


def _bodies() -> dict[str, str]:
    with session_scope() as s:
        rows = s.execute(text("SELECT title, body FROM testapp_note ORDER BY title")).all()
    return {title: body for title, body in rows}


_APPEND = text("UPDATE testapp_note SET body = body || :m WHERE title = :t")


def _deadlocking_scope(
    first: str,
    second: str,
    mark: str,
    barrier: threading.Barrier | None,
) -> None:
    with session_scope() as s:
        s.execute(text("SET LOCAL deadlock_timeout = '100ms'"))
        s.execute(_APPEND, {"m": mark, "t": first})
        if barrier is not None:
            barrier.wait(timeout=10)
        s.execute(_APPEND, {"m": mark, "t": second})


@pytest.mark.usefixtures("two_rows")
def test_r15_deadlock_victim_gets_deadlock_error_and_other_commits() -> None:
    """Two scopes updating two rows in opposite order: one DeadlockError (40P01), one commit."""
    barrier = threading.Barrier(2)
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [
            pool.submit(_deadlocking_scope, "a", "b", "1", barrier),
            pool.submit(_deadlocking_scope, "b", "a", "2", barrier),
        ]
        outcomes = [f.exception(timeout=60) for f in futures]
    failures = [e for e in outcomes if e is not None]
    assert len(failures) == 1, outcomes
    error = failures[0]
    assert isinstance(error, DeadlockError)
    assert error.transient is True
    assert error.pool == "main"
    assert isinstance(error.__cause__, sa_exc.DBAPIError)
    assert error.__cause__.orig.sqlstate == "40P01"

    winner = "1" if outcomes[0] is None else "2"
    assert _bodies() == {"a": "on" + winner, "b": "on" + winner}
    assert get_engine().pool.checkedout() == 0


@pytest.mark.usefixtures("two_rows")
def test_r15_execute_with_retry_around_the_scope_makes_both_deadlockers_commit() -> None:
    """execute_with_retry around the whole scope retries the deadlock victim until it commits."""
    barrier = threading.Barrier(2)
    attempts = {"1": 0, "2": 0}

    def worker(first: str, second: str, mark: str) -> None:
        def operation() -> None:
            attempts[mark] += 1
            _deadlocking_scope(first, second, mark, barrier if attempts[mark] == 1 else None)

        execute_with_retry(operation, max_retries=3, base_delay=0.01, max_delay=0.05)

    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(worker, "a", "b", "1"), pool.submit(worker, "b", "a", "2")]
        for f in futures:
            f.result(timeout=60)
    assert sorted(attempts.values()) == [1, 2]
    assert state.sessions.retries == 1
    bodies = _bodies()
    # Each transaction applied exactly once: both marks, once each, on both rows.
    assert sorted(bodies["a"].removeprefix("on")) == ["1", "2"]
    assert sorted(bodies["b"].removeprefix("on")) == ["1", "2"]
    assert get_engine().pool.checkedout() == 0


@pytest.mark.usefixtures("two_rows")
def test_r15_write_skew_under_serializable_raises_serialization_error() -> None:
    """Write skew between two SERIALIZABLE scopes: the later one gets SerializationError (40001)."""
    both_read = threading.Barrier(2)
    first_done = threading.Event()

    def doctor(mine: str, wait_for_first: bool) -> None:
        try:
            with session_scope() as s:
                s.connection(execution_options={"isolation_level": "SERIALIZABLE"})
                on_call = s.execute(
                    text("SELECT count(*) FROM testapp_note WHERE body = 'on'")
                ).scalar_one()
                both_read.wait(timeout=10)
                if wait_for_first:
                    assert first_done.wait(timeout=10)
                if on_call == 2:
                    s.execute(
                        text("UPDATE testapp_note SET body = 'off' WHERE title = :t"), {"t": mine}
                    )
        finally:
            if not wait_for_first:
                first_done.set()

    with ThreadPoolExecutor(max_workers=2) as pool:
        first = pool.submit(doctor, "a", False)
        second = pool.submit(doctor, "b", True)
        assert first.exception(timeout=60) is None
        error = second.exception(timeout=60)
    assert isinstance(error, SerializationError)
    assert error.transient is True
    assert error.pool == "main"
    assert isinstance(error.__cause__, sa_exc.DBAPIError)
    assert error.__cause__.orig.sqlstate == "40001"
    assert _bodies() == {"a": "off", "b": "on"}
    assert get_engine().pool.checkedout() == 0


@pytest.mark.usefixtures("two_rows")
def test_r15_lock_timeout_raises_lock_timeout_error() -> None:
    """A scope waiting past lock_timeout on a FOR UPDATE row gets LockTimeoutError (55P03)."""
    locked = threading.Event()
    release = threading.Event()

    def waiter() -> None:
        with session_scope() as s:
            s.execute(text("SET LOCAL lock_timeout = '100ms'"))
            s.execute(text("UPDATE testapp_note SET body = 'x' WHERE title = 'a'"))

    def holder() -> None:
        with session_scope() as s:
            s.execute(text("SELECT id FROM testapp_note WHERE title = 'a' FOR UPDATE")).all()
            locked.set()
            assert release.wait(timeout=30)

    with ThreadPoolExecutor(max_workers=1) as pool:
        held = pool.submit(holder)
        try:
            assert locked.wait(timeout=10)
            with pytest.raises(LockTimeoutError) as info:
                waiter()
        finally:
            release.set()
        held.result(timeout=30)
    error = info.value
    assert error.transient is True
    assert error.pool == "main"
    assert isinstance(error.__cause__, sa_exc.DBAPIError)
    assert error.__cause__.orig.sqlstate == "55P03"
    assert _bodies()["a"] == "on"
    assert get_engine().pool.checkedout() == 0


@pytest.mark.parametrize(
    ("statements", "expected"),
    [
        (
            [
                "INSERT INTO testapp_note (title, body) VALUES ('dup', '')",
                "INSERT INTO testapp_note (title, body) VALUES ('dup', '')",
            ],
            sa_exc.IntegrityError,
        ),
        (["SELECT * FROM h4_no_such_table"], sa_exc.ProgrammingError),
        (
            [f"INSERT INTO testapp_note (title, body) VALUES ('{'x' * 101}', '')"],
            sa_exc.DataError,
        ),
    ],
    ids=["unique_violation", "missing_table", "bad_data"],
)
def test_r15_non_transient_failures_are_never_retried(
    statements: list[str], expected: type[Exception]
) -> None:
    """execute_with_retry calls a scope failing with a data error exactly once and re-raises it."""
    calls = 0

    def operation() -> None:
        nonlocal calls
        calls += 1
        with session_scope() as s:
            for statement in statements:
                s.execute(text(statement))

    with pytest.raises(expected) as info:
        execute_with_retry(operation, max_retries=3, base_delay=0.01, max_delay=0.05)
    assert not isinstance(info.value, SessionError)
    assert calls == 1
    assert state.sessions.retries == 0
    assert _count_notes("dup") == 0
    assert get_engine().pool.checkedout() == 0


# -- Engines follow the test database ----------------------------------------------------------


def test_engines_follow_the_test_databases() -> None:
    """Each pool's engine points at its alias's test database, not the configured NAME."""
    for pool, alias in (("main", "default"), ("other", "other")):
        name = connections[alias].settings_dict["NAME"]
        assert name.startswith("test_")
        engine = get_engine(pool)
        assert engine.url.database == name
        with session_scope(pool) as s:
            assert s.execute(text("SELECT current_database()")).scalar_one() == name
            assert s.execute(text("SHOW application_name")).scalar_one() == (
                f"mingus_sessions:{pool}"
            )


# -- Authentication failures ------------------------------------------------------------------


@pytest.fixture
def auth_role(admin: Any, db_name: str) -> Iterator[str]:
    """A role of this test only; dropped (its backends ended first) in teardown."""
    admin.execute(f"DROP ROLE IF EXISTS {AUTH_ROLE}")
    admin.execute(f"CREATE ROLE {AUTH_ROLE} LOGIN PASSWORD 'right'")
    try:
        yield AUTH_ROLE
    finally:
        admin.execute(
            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
            "WHERE usename = %s AND datname = %s",
            (AUTH_ROLE, db_name),
        )
        admin.execute(f"DROP ROLE IF EXISTS {AUTH_ROLE}")


def _use_auth_pool(settings: Any, connect_args: dict[str, Any]) -> None:
    pools = dict(settings.MINGUS_SESSIONS["POOLS"])
    pools["auth"] = {
        "DATABASE": "default",
        "POOL_SIZE": 1,
        "MAX_OVERFLOW": 0,
        "CONNECT_ARGS": connect_args,
    }
    settings.MINGUS_SESSIONS = {**settings.MINGUS_SESSIONS, "POOLS": pools}


def _trusts_tcp_localhost(admin: Any, role: str) -> bool:
    """Whether pg_hba.conf's first rule for ``role`` over TCP on 127.0.0.1 is ``trust``."""
    rows = admin.execute(
        "SELECT auth_method FROM pg_hba_file_rules WHERE type = 'host' "
        "AND (address IS NULL OR address IN ('127.0.0.1', 'all', '0.0.0.0')) "
        "AND (user_name @> ARRAY['all'] OR user_name @> ARRAY[%s]) "
        "ORDER BY line_number LIMIT 1",
        (role,),
    ).fetchall()
    return bool(rows) and rows[0][0] == "trust"


def test_wrong_password_raises_authentication_error(
    admin: Any, auth_role: str, settings: Any
) -> None:
    """A wrong password (SQLSTATE 28P01) gets a non-transient AuthenticationError from the scope.

    The cluster of ``make test-faults`` asks this role for its password
    (``scripts/pg_cluster.sh``); a server that trusts it cannot refuse a password.
    """
    if _trusts_tcp_localhost(admin, auth_role):
        pytest.skip(
            f"pg_hba.conf trusts {auth_role} on 127.0.0.1, so no password is checked here; "
            "make test-faults runs this on a cluster that checks it"
        )
    _use_auth_pool(settings, {"user": auth_role, "password": "wrong"})
    with pytest.raises(AuthenticationError) as info, session_scope("auth") as s:
        s.execute(text("SELECT 1"))
    assert info.value.transient is False
    assert info.value.pool == "auth"
    assert "wrong" not in str(info.value)
    # The right password works through the same settings: the refusal was the password's.
    _use_auth_pool(settings, {"user": auth_role, "password": "right"})
    with session_scope("auth") as s:
        assert s.execute(text("SELECT current_user")).scalar_one() == auth_role


def test_login_refused_by_server_raises_authentication_error(
    admin: Any, auth_role: str, settings: Any
) -> None:
    """A role the server refuses to log in (SQLSTATE 28000) gets AuthenticationError."""
    admin.execute(f"ALTER ROLE {auth_role} NOLOGIN")
    _use_auth_pool(settings, {"user": auth_role, "password": "right"})
    with pytest.raises(AuthenticationError) as info, session_scope("auth") as s:
        s.execute(text("SELECT 1"))
    assert info.value.transient is False
    assert info.value.pool == "auth"
