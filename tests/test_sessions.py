"""The public session API: engines, scopes, savepoints, context, retry and the breaker."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import os
import threading
import time
from typing import Any

import pytest
from django.conf import settings as django_settings
from sqlalchemy import event, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session

import mingus_sessions
from mingus_sessions import (
    CircuitBreaker,
    CircuitOpenError,
    CommitOutcomeUnknownError,
    DatabaseUnavailableError,
    DeadlockError,
    SessionError,
    current_session,
    execute_with_retry,
    get_circuit_breaker,
    get_engine,
    get_session,
    pool_context,
    retry_on_transient,
    session_scope,
    with_db_session,
)
from mingus_sessions._core.retry import backoff_delay
from mingus_sessions._core.state import state
from mingus_sessions.after_commit import on_commit
from mingus_sessions.sessions import LazyScope
from tests.helpers import NoteRow, add_unreachable_alias

BACKEND = os.environ.get("MINGUS_TEST_DATABASE", "sqlite")

db = pytest.mark.django_db(transaction=True, databases=["default", "other"])


class Boom(Exception):
    """A non-database failure raised inside scopes."""


def insert(session: Session, title: str) -> None:
    session.execute(
        text("INSERT INTO testapp_note (title, body) VALUES (:title, '')"), {"title": title}
    )


def titles(pool: str | None = None) -> list[str]:
    """Every title, read from a fresh scope (so only committed rows)."""
    with session_scope(pool) as session:
        return list(
            session.execute(text("SELECT title FROM testapp_note ORDER BY title")).scalars()
        )


def checked_out(pool: str | None = None) -> int:
    return int(get_engine(pool).pool.checkedout())  # type: ignore[attr-defined]


def with_pools(settings: Any, **extra: Any) -> dict[str, Any]:
    """Set ``MINGUS_SESSIONS`` to the suite's settings plus ``extra`` pools; return it."""
    config = copy.deepcopy(django_settings.MINGUS_SESSIONS)
    for key in ("CIRCUIT_BREAKER", "RETRY"):
        if key in extra:
            config[key] = extra.pop(key)
    config["POOLS"].update(extra)
    settings.MINGUS_SESSIONS = config
    return config


# -- engines and sessions ----------------------------------------------------------------


@db
def test_get_session_returns_new_session_bound_to_pool_engine() -> None:
    """get_session returns a new Session bound to the pool's engine that the caller closes."""
    first = get_session()
    second = get_session("other")
    try:
        assert isinstance(first, Session)
        assert first is not second
        assert first.get_bind() is get_engine()
        assert second.get_bind() is get_engine("other")
        assert first.execute(text("SELECT 1")).scalar() == 1
        assert checked_out() == 1
    finally:
        first.close()
        second.close()
    assert checked_out() == 0


@db
def test_get_engine_is_one_engine_per_pool() -> None:
    """get_engine returns the same engine for a pool every time and a different one per pool."""
    assert get_engine() is get_engine()
    assert get_engine("main") is get_engine()
    assert get_engine("other") is get_engine("other")
    assert get_engine("other") is not get_engine("main")


@db
def test_pool_context_yields_the_pools_engine() -> None:
    """pool_context("other") yields that pool's engine, usable as in the seeds."""
    with pool_context("other") as pool:
        assert pool is get_engine("other")
        with pool.connect() as conn:
            assert conn.execute(text("SELECT 1")).scalar() == 1
    assert checked_out("other") == 0


# -- session_scope -------------------------------------------------------------------------


@db
def test_scope_commits_on_success() -> None:
    """session_scope commits on success: the row is visible from a fresh scope."""
    with session_scope() as session:
        insert(session, "committed")
    assert titles() == ["committed"]


@db
def test_scope_rolls_back_and_reraises_unchanged() -> None:
    """session_scope rolls back on exception and re-raises a non-DB exception unchanged."""
    raised = Boom("the original")

    def write_then_fail() -> None:
        with session_scope() as session:
            insert(session, "rolled-back")
            raise raised

    with pytest.raises(Boom) as info:
        write_then_fail()
    assert info.value is raised
    assert titles() == []


@db
def test_scope_always_closes() -> None:
    """session_scope closes its session on success and on failure: nothing stays checked out."""
    with session_scope() as session:
        session.execute(text("SELECT 1"))
        assert checked_out() == 1
    assert checked_out() == 0

    def query_then_fail() -> None:
        with session_scope() as session:
            session.execute(text("SELECT 1"))
            raise Boom

    with pytest.raises(Boom):
        query_then_fail()
    assert checked_out() == 0


@db
def test_scope_does_not_expire_on_commit() -> None:
    """Objects stay readable after their scope committed (expire_on_commit=False)."""
    with session_scope() as session:
        note = NoteRow(title="kept", body="body text")
        session.add(note)
    assert note.title == "kept"
    assert note.body == "body text"
    assert isinstance(note.id, int)


# -- savepoints ------------------------------------------------------------------------------


@db
@pytest.mark.parametrize("outer_fails", [False, True], ids=["outer-commit", "outer-rollback"])
@pytest.mark.parametrize("inner_fails", [False, True], ids=["inner-commit", "inner-rollback"])
def test_savepoint_matrix(outer_fails: bool, inner_fails: bool) -> None:
    """Outer commit/rollback x inner commit/rollback leaves exactly the expected rows (R11)."""
    try:
        with session_scope() as outer:
            insert(outer, "outer-1")
            try:
                with session_scope() as inner:
                    assert inner is outer
                    assert outer.in_nested_transaction()
                    insert(inner, "inner")
                    if inner_fails:
                        raise Boom("inner")
            except Boom:
                assert inner_fails
            assert not outer.in_nested_transaction()
            insert(outer, "outer-2")
            if outer_fails:
                raise Boom("outer")
    except Boom:
        assert outer_fails
    expected = (
        [] if outer_fails else sorted(["outer-1", "outer-2", *([] if inner_fails else ["inner"])])
    )
    assert titles() == expected
    assert state.sessions.savepoints == 1
    assert checked_out() == 0


@db
def test_inner_failure_rolls_back_only_inner_work() -> None:
    """An inner scope's failure undoes its own writes; the outer scope continues and commits."""

    def inner_work() -> None:
        with session_scope() as inner:
            assert inner is outer
            insert(inner, "inner-1")
            insert(inner, "inner-2")
            raise Boom

    with session_scope() as outer:
        insert(outer, "before")
        with pytest.raises(Boom):
            inner_work()
        assert current_session() is outer
        insert(outer, "after")
    assert titles() == ["after", "before"]


@db
@pytest.mark.parametrize("where", ["flush-in-body", "flush-at-inner-exit"])
def test_inner_scope_whose_flush_fails_leaves_the_outer_scope_usable(where: str) -> None:
    """A failed flush leaves the savepoint deactivated, not active: it is rolled back all the same.

    Otherwise the outer scope's next statement raises PendingRollbackError and
    the outer work is lost, where an inner failure must undo the inner work only.
    """
    with session_scope() as outer:
        outer.add(NoteRow(title="taken"))
        outer.flush()
        with pytest.raises(sa_exc.IntegrityError), session_scope() as inner:
            inner.add(NoteRow(title="taken"))  # a unique violation, at flush
            if where == "flush-in-body":
                inner.flush()
        assert not outer.in_nested_transaction()
        outer.add(NoteRow(title="after"))
    assert titles() == ["after", "taken"]
    assert checked_out() == 0


@db
@pytest.mark.postgresql
def test_caught_error_inside_begin_nested_lets_the_outer_scope_commit() -> None:
    """ROLLBACK TO SAVEPOINT repairs PostgreSQL's aborted transaction, whoever issues it.

    SQLAlchemy's own ``begin_nested()`` idiom: the outer commit is not refused.
    """
    with session_scope() as outer:
        insert(outer, "kept")
        with pytest.raises(sa_exc.IntegrityError), outer.begin_nested():
            insert(outer, "kept")
        insert(outer, "after")
    assert titles() == ["after", "kept"]


@db
@pytest.mark.postgresql
def test_caught_error_inside_an_inner_scope_rolls_the_inner_scope_back() -> None:
    """An inner scope whose body caught a statement error raises and rolls back to its savepoint.

    RELEASE would fail on the aborted transaction and leave the outer scope
    unable to go on; instead the inner work is undone, the caller is told, and
    the outer transaction goes on and commits.
    """
    with session_scope() as outer:
        insert(outer, "kept")
        refused = pytest.raises(mingus_sessions.TransactionError, match="savepoint on pool 'main'")
        with refused, session_scope() as inner:
            insert(inner, "inner")
            with contextlib.suppress(sa_exc.IntegrityError):
                insert(inner, "kept")
        insert(outer, "after")
    assert titles() == ["after", "kept"]
    assert checked_out() == 0


@db
@pytest.mark.postgresql
def test_caught_error_in_the_outer_scope_refuses_the_commit() -> None:
    """PostgreSQL would answer COMMIT with ROLLBACK: the scope raises rather than report success."""
    refused = pytest.raises(mingus_sessions.TransactionError, match="aborted by an earlier")
    with refused, session_scope() as session:
        insert(session, "lost")
        with contextlib.suppress(sa_exc.IntegrityError):
            insert(session, "lost")
    assert titles() == []
    assert checked_out() == 0


def commit_unopened_lazy_scope(callback: Any) -> None:
    """A task's or request's scope that registers ``callback`` and commits without a statement."""
    scope = LazyScope()
    token = scope.activate()
    try:
        on_commit(callback)
        scope.finish(commit=True)
    finally:
        LazyScope.deactivate(token)


@db
@pytest.mark.parametrize("outer_fails", [False, True], ids=["outer-commits", "outer-rolls-back"])
def test_lazy_scope_that_never_opened_hands_its_callbacks_to_the_outer_scope(
    outer_fails: bool,
) -> None:
    """A task or request scope inside a scope, with on_commit callbacks but no statement.

    Had it opened, it would have been a savepoint of the outer scope: its
    callbacks wait for the outer transaction, and are dropped if it rolls back.
    """
    ran: list[str] = []
    with contextlib.suppress(Boom), session_scope() as outer:
        insert(outer, "outer")
        commit_unopened_lazy_scope(lambda: ran.append("published"))
        assert ran == []
        if outer_fails:
            raise Boom
    assert ran == ([] if outer_fails else ["published"])


@db
def test_lazy_scope_inside_an_unopened_lazy_scope_keeps_the_callbacks_waiting() -> None:
    """Neither scope opened: the callbacks wait for the outer one, and run when it commits."""
    ran: list[str] = []
    outer = LazyScope()
    outer_token = outer.activate()
    try:
        commit_unopened_lazy_scope(lambda: ran.append("published"))
        assert ran == []
    finally:
        LazyScope.deactivate(outer_token)
    outer.finish(commit=True)
    assert ran == ["published"]


@db
def test_three_levels_of_savepoints() -> None:
    """Three nested scopes are savepoints on one session and each failure undoes its level only."""

    def third(level1: Session) -> None:
        with session_scope() as level3:
            assert level3 is level1
            insert(level3, "c")
            raise Boom("level 3")

    def second(level1: Session) -> None:
        with session_scope() as level2:
            assert level2 is level1
            insert(level2, "b")
            with pytest.raises(Boom, match="level 3"):
                third(level1)
            insert(level2, "d")
            raise Boom("level 2")

    with session_scope() as level1:
        insert(level1, "a")
        with pytest.raises(Boom, match="level 2"):
            second(level1)
        with session_scope() as again:
            insert(again, "e")
            with session_scope() as deepest:
                insert(deepest, "f")
        insert(level1, "g")
    assert titles() == ["a", "e", "f", "g"]
    assert state.sessions.savepoints == 4


@db
def test_no_savepoint_leaks() -> None:
    """After nested scopes end, no savepoint stays open, nothing is checked out, scopes work."""

    def failing_scope() -> None:
        with session_scope():
            raise Boom

    for _ in range(5):
        with session_scope() as outer:
            with session_scope(), pytest.raises(Boom):
                failing_scope()
            assert not outer.in_nested_transaction()
    assert state.sessions.savepoints == 10
    assert checked_out() == 0
    with session_scope() as session:
        insert(session, "works")
        assert not session.in_nested_transaction()
    assert titles() == ["works"]


@db
def test_savepoint_statements_and_outer_rollback_undo_released_savepoint() -> None:
    """SAVEPOINT / RELEASE are really emitted (SQLite too) and an outer rollback undoes both."""
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement.upper())

    def release_then_fail() -> None:
        with session_scope() as outer:
            insert(outer, "outer")
            with session_scope() as inner:
                insert(inner, "released")
            raise Boom

    engine = get_engine()
    event.listen(engine, "before_cursor_execute", record)
    try:
        with pytest.raises(Boom):
            release_then_fail()
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert any(s.startswith("SAVEPOINT") for s in statements)
    assert any(s.startswith("RELEASE SAVEPOINT") for s in statements)
    if BACKEND == "sqlite":
        assert "BEGIN" in statements
    assert titles() == []


# -- independent and other-pool scopes --------------------------------------------------------


@db
def test_independent_scope_commit_survives_outer_rollback() -> None:
    """independent=True opens another session whose commit survives the outer rollback."""

    def outer_fails() -> None:
        with session_scope() as outer:
            with session_scope(independent=True) as independent:
                assert independent is not outer
                assert current_session() is independent
                insert(independent, "independent")
            assert current_session() is outer
            insert(outer, "outer")
            raise Boom

    with pytest.raises(Boom):
        outer_fails()
    assert titles() == ["independent"]
    assert state.sessions.savepoints == 0
    assert checked_out() == 0


@db
def test_scope_on_other_pool_is_separate_session() -> None:
    """A scope of pool "other" inside a "main" scope is a separate session on its own engine."""
    with session_scope() as main:
        with session_scope("other") as other:
            assert other is not main
            assert other.get_bind() is get_engine("other")
            assert current_session() is other
            assert current_session("other") is other
            assert current_session("main") is main
            insert(other, "in-other")
        assert current_session() is main
        insert(main, "in-main")
    assert state.sessions.savepoints == 0
    assert titles() == ["in-main"]
    assert titles("other") == ["in-other"]


# -- current_session ---------------------------------------------------------------------------


@db
def test_current_session_inside_scope_and_by_pool() -> None:
    """current_session returns the innermost scope's session, or the named pool's."""
    with session_scope() as main:
        assert current_session() is main
        assert current_session("main") is main
        with pytest.raises(SessionError):
            current_session("other")
        with session_scope("other") as other:
            assert current_session("other") is other
            assert current_session("main") is main


@db
def test_current_session_outside_scope_says_how_to_fix() -> None:
    """current_session outside any scope raises SessionError whose message says what to do."""
    with pytest.raises(SessionError, match="session_scope") as info:
        current_session()
    assert "No active session" in str(info.value)
    with pytest.raises(SessionError, match='pool "other"'):
        current_session("other")


@db
def test_current_session_is_per_thread() -> None:
    """A new thread started inside a scope sees no active session."""
    seen: list[BaseException] = []

    def look() -> None:
        try:
            current_session()
        except BaseException as exc:
            seen.append(exc)

    with session_scope():
        thread = threading.Thread(target=look)
        thread.start()
        thread.join(10)
    assert len(seen) == 1
    assert isinstance(seen[0], SessionError)


@db
def test_current_session_is_per_asyncio_task() -> None:
    """Two concurrent asyncio tasks, each in its own scope, each see their own session."""

    async def task(name: str, both_inside: asyncio.Barrier) -> tuple[Session, Session, str]:
        with session_scope() as session:
            await both_inside.wait()  # the other task's scope is open now too
            await asyncio.sleep(0)
            seen = current_session()
            found = session.execute(text("SELECT :n"), {"n": name}).scalar_one()
        return session, seen, found

    async def main() -> list[tuple[Session, Session, str]]:
        barrier = asyncio.Barrier(2)
        return list(await asyncio.gather(task("a", barrier), task("b", barrier)))

    (s1, seen1, n1), (s2, seen2, n2) = asyncio.run(main())
    assert s1 is not s2
    assert seen1 is s1
    assert seen2 is s2
    assert (n1, n2) == ("a", "b")
    assert state.sessions.total_sessions == 2
    assert checked_out() == 0


@db
def test_scope_after_independent_scope_returns_to_right_session() -> None:
    """Nesting inside and after an independent scope always finds the innermost session."""
    with session_scope() as outer:
        with session_scope(independent=True) as independent:
            with session_scope() as nested_in_independent:
                assert nested_in_independent is independent
                assert current_session() is independent
            assert current_session() is independent
        assert current_session() is outer
        with session_scope() as nested_after:
            assert nested_after is outer
            insert(nested_after, "nested-after")
        assert current_session() is outer
    with pytest.raises(SessionError):
        current_session()
    assert titles() == ["nested-after"]


# -- with_db_session -----------------------------------------------------------------------------


@db
def test_with_db_session_bare_and_with_pool() -> None:
    """with_db_session, bare or given a pool, passes that pool's session= and commits."""

    @with_db_session
    def bare(title: str, *, session: Session) -> Session:
        insert(session, title)
        return session

    @with_db_session("other")
    def on_other(title: str, *, session: Session) -> Session:
        insert(session, title)
        return session

    @with_db_session()
    def called_empty(*, session: Session) -> Session:
        return session

    assert bare("bare").get_bind() is get_engine()
    assert on_other("on-other").get_bind() is get_engine("other")
    assert called_empty().get_bind() is get_engine()
    assert bare.__name__ == "bare"
    assert titles() == ["bare"]
    assert titles("other") == ["on-other"]
    assert state.sessions.committed_transactions >= 3


# -- READ_ONLY and ISOLATION_LEVEL ---------------------------------------------------------------


@db
def test_read_only_pool_refuses_writes(settings: Any) -> None:
    """A READ_ONLY pool can read but a write fails in the database and nothing is written."""
    with_pools(settings, ro={"DATABASE": "default", "READ_ONLY": True})
    assert titles("ro") == []
    with pytest.raises(sa_exc.DBAPIError) as info, session_scope("ro") as session:
        insert(session, "forbidden")
    if BACKEND == "postgresql":
        assert isinstance(info.value, sa_exc.InternalError)
        assert getattr(info.value.orig, "sqlstate", None) == "25006"
    elif BACKEND == "mysql":
        assert isinstance(info.value, sa_exc.OperationalError)
        assert info.value.orig.args[0] == 1792  # a write in a READ ONLY transaction
    else:
        assert isinstance(info.value, sa_exc.OperationalError)
        assert "readonly" in str(info.value.orig).lower()
    assert not isinstance(info.value, SessionError)
    assert titles() == []
    assert checked_out("ro") == 0


@db
@pytest.mark.postgresql
def test_read_only_pool_postgresql_transaction_is_read_only(settings: Any) -> None:
    """On PostgreSQL a READ_ONLY pool's transactions report transaction_read_only = on."""
    with_pools(settings, ro={"DATABASE": "default", "READ_ONLY": True})
    with session_scope("ro") as session:
        assert session.execute(text("SHOW transaction_read_only")).scalar() == "on"
    with session_scope() as session:
        assert session.execute(text("SHOW transaction_read_only")).scalar() == "off"


@db
@pytest.mark.parametrize("level", ["SERIALIZABLE", "READ UNCOMMITTED"])
def test_isolation_level_setting(settings: Any, level: str) -> None:
    """ISOLATION_LEVEL is the isolation level of every connection of the pool."""
    with_pools(settings, iso={"DATABASE": "default", "ISOLATION_LEVEL": level})
    with session_scope("iso") as session:
        conn = session.connection()
        assert conn.get_isolation_level() == level
        if BACKEND == "postgresql":
            shown = session.execute(text("SHOW transaction_isolation")).scalar()
            assert shown == level.lower()
        insert(session, "isolated")
    assert titles() == ["isolated"]
    with session_scope() as session:
        default_level = session.connection().get_isolation_level()
    server_default = {"postgresql": "READ COMMITTED", "mysql": "REPEATABLE READ"}
    assert default_level == server_default.get(BACKEND, "SERIALIZABLE")


# -- stats -----------------------------------------------------------------------------------------


@db
def test_session_stats_shape_and_counts() -> None:
    """Scopes keep total, active, committed, rolled back, failed and savepoint counts exactly."""
    assert state.sessions.snapshot() == {
        "total_sessions": 0,
        "active_sessions": 0,
        "committed_transactions": 0,
        "transaction_rollbacks": 0,
        "failed_sessions": 0,
        "savepoints": 0,
        "retries": 0,
    }
    with session_scope() as session:
        assert state.sessions.active_sessions == 1
        insert(session, "one")
    assert state.sessions.active_sessions == 0

    def failing_scope() -> None:
        with session_scope():
            assert state.sessions.active_sessions == 1  # a savepoint is not a session
            raise Boom

    with pytest.raises(Boom):
        failing_scope()
    with session_scope(), pytest.raises(Boom):
        failing_scope()
    assert state.sessions.snapshot() == {
        "total_sessions": 3,
        "active_sessions": 0,
        "committed_transactions": 2,
        "transaction_rollbacks": 2,  # the failed scope and the failed savepoint
        "failed_sessions": 2,
        "savepoints": 1,
        "retries": 0,
    }


@db
def test_session_stats_exact_under_threads() -> None:
    """Scopes opened by 8 threads at once are all counted and active_sessions returns to 0."""
    start = threading.Barrier(8)

    def worker() -> None:
        start.wait(10)
        for _ in range(500):
            with session_scope():  # no statement: no connection is checked out
                pass

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert state.sessions.total_sessions == 4000
    assert state.sessions.committed_transactions == 4000
    assert state.sessions.active_sessions == 0


# -- retry -------------------------------------------------------------------------------------


@db
def test_execute_with_retry_retries_transient_errors() -> None:
    """execute_with_retry retries a transient error with backoff and returns the result."""
    calls: list[int] = []
    slept: list[float] = []

    def operation() -> str:
        calls.append(1)
        if len(calls) <= 2:
            raise DeadlockError("x")
        return "done"

    result = execute_with_retry(
        operation, max_retries=3, base_delay=0.5, max_delay=10.0, sleep=slept.append
    )
    assert result == "done"
    assert len(calls) == 3
    assert len(slept) == 2
    assert 0.0 <= slept[0] <= 0.5
    assert 0.0 <= slept[1] <= 1.0
    assert state.sessions.retries == 2


@db
def test_execute_with_retry_retries_a_whole_scope() -> None:
    """A transient failure inside a scope rolls it back and the retried scope commits once."""
    calls: list[int] = []

    def operation() -> None:
        with session_scope() as session:
            calls.append(1)
            insert(session, f"attempt-{len(calls)}")
            if len(calls) == 1:
                raise DeadlockError("x")

    execute_with_retry(operation, max_retries=2, base_delay=0.001, sleep=lambda _: None)
    assert titles() == ["attempt-2"]
    assert state.sessions.retries == 1


@db
def test_retry_on_transient_decorator() -> None:
    """retry_on_transient retries the decorated function on transient errors."""
    calls: list[int] = []

    @retry_on_transient(max_retries=3, base_delay=0.001, max_delay=0.002)
    def flaky(value: int) -> int:
        calls.append(value)
        if len(calls) <= 2:
            raise DeadlockError("x")
        return value * 2

    assert flaky(21) == 42
    assert calls == [21, 21, 21]
    assert state.sessions.retries == 2
    assert flaky.__name__ == "flaky"

    bare_calls: list[int] = []

    @retry_on_transient
    def bare() -> str:
        bare_calls.append(1)
        if len(bare_calls) == 1:
            raise DeadlockError("x")
        return "ok"

    assert bare() == "ok"  # RETRY's defaults: one retry after at most BASE_DELAY (0.1 s)
    assert len(bare_calls) == 2
    assert state.sessions.retries == 3


@db
def test_retry_never_retries_integrity_error() -> None:
    """A real duplicate-key IntegrityError is raised at once: the operation runs exactly once."""
    with session_scope() as session:
        insert(session, "dup")
    calls: list[int] = []
    slept: list[float] = []

    def operation() -> None:
        calls.append(1)
        with session_scope() as session:
            insert(session, "dup")

    with pytest.raises(sa_exc.IntegrityError):
        execute_with_retry(operation, max_retries=5, base_delay=0.001, sleep=slept.append)
    assert len(calls) == 1
    assert slept == []
    assert state.sessions.retries == 0

    decorated_calls: list[int] = []

    @retry_on_transient(max_retries=5, base_delay=0.001)
    def decorated() -> None:
        decorated_calls.append(1)
        operation()

    with pytest.raises(sa_exc.IntegrityError):
        decorated()
    assert len(decorated_calls) == 1
    assert titles() == ["dup"]


@db
def test_retry_raises_last_error_after_max_retries() -> None:
    """After max_retries retries the last transient error itself is raised."""
    raised: list[DeadlockError] = []

    def operation() -> None:
        error = DeadlockError(f"attempt {len(raised) + 1}")
        raised.append(error)
        raise error

    with pytest.raises(DeadlockError) as info:
        execute_with_retry(operation, max_retries=2, base_delay=0.001, sleep=lambda _: None)
    assert len(raised) == 3
    assert info.value is raised[-1]
    assert state.sessions.retries == 2


@pytest.mark.parametrize(
    ("keyword", "value"),
    [("base_delay", 1e12), ("max_delay", 1e12), ("base_delay", -1), ("max_delay", float("nan"))],
)
def test_execute_with_retry_refuses_a_delay_the_clock_cannot_sleep(
    keyword: str, value: float
) -> None:
    """A delay argument out of range is refused before the first call, naming the argument,
    instead of an OverflowError replacing the failure being retried."""
    calls: list[int] = []
    with pytest.raises(ValueError, match=f"^{keyword} must be a number of seconds from 0 to 86400"):
        execute_with_retry(lambda: calls.append(1), **{keyword: value})  # type: ignore[arg-type]
    assert calls == []


def test_backoff_delay_exponential_capped_and_jittered() -> None:
    """backoff_delay doubles per attempt, stops at max_delay, and jitter stays in [0, ceiling]."""
    plain = [backoff_delay(n, base_delay=0.1, max_delay=1.0, jitter=False) for n in range(6)]
    assert plain == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    assert backoff_delay(500, base_delay=0.1, max_delay=30.0, jitter=False) == 30.0

    asked: list[tuple[float, float]] = []

    def rng(low: float, high: float) -> float:
        asked.append((low, high))
        return high / 2

    assert backoff_delay(3, base_delay=0.1, max_delay=30.0, jitter=True, rng=rng) == (
        pytest.approx(0.4)
    )
    assert asked == [(0.0, pytest.approx(0.8))]

    for attempt in range(10):
        ceiling = min(2.0, 0.1 * 2**attempt)
        draws = [
            backoff_delay(attempt, base_delay=0.1, max_delay=2.0, jitter=True) for _ in range(200)
        ]
        assert all(0.0 <= d <= ceiling for d in draws)
        assert len(set(draws)) > 1  # really random


# -- circuit breaker (unit) -------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def unavailable() -> None:
    raise DatabaseUnavailableError("refused", pool="x")


def trip(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        with pytest.raises(DatabaseUnavailableError):
            breaker.call(unavailable)


def test_breaker_opens_after_threshold_and_fails_fast() -> None:
    """The breaker opens after FAILURE_THRESHOLD consecutive failures and then calls nothing."""
    clock = FakeClock()
    breaker = CircuitBreaker(3, 10.0, clock=clock)
    assert breaker.state == "closed"
    trip(breaker, 2)
    assert breaker.state == "closed"
    trip(breaker, 1)
    assert breaker.state == "open"
    ran: list[int] = []
    with pytest.raises(CircuitOpenError) as info:
        breaker.call(lambda: ran.append(1))
    assert ran == []
    assert info.value.transient is False
    assert isinstance(info.value, mingus_sessions.DatabaseConnectionError)


def test_breaker_failures_must_be_consecutive() -> None:
    """A success resets the failure count, so only consecutive failures open the breaker."""
    breaker = CircuitBreaker(3, 10.0, clock=FakeClock())
    trip(breaker, 2)
    assert breaker.call(lambda: "ok") == "ok"
    assert breaker.failures == 0
    trip(breaker, 2)
    assert breaker.state == "closed"


def test_breaker_half_open_after_recovery_timeout() -> None:
    """state already says "half_open" once recovery_timeout has passed, without any call."""
    clock = FakeClock()
    breaker = CircuitBreaker(2, 10.0, clock=clock)
    trip(breaker, 2)
    clock.now += 9.99
    assert breaker.state == "open"
    clock.now += 0.01
    assert breaker.state == "half_open"


def test_breaker_trial_success_closes() -> None:
    """A successful half-open trial closes the breaker and clears the count."""
    clock = FakeClock()
    breaker = CircuitBreaker(2, 10.0, clock=clock)
    trip(breaker, 2)
    clock.now += 10.0
    assert breaker.call(lambda: 42) == 42
    assert breaker.state == "closed"
    assert breaker.failures == 0
    assert breaker.call(lambda: 43) == 43


def test_breaker_trial_failure_reopens() -> None:
    """A failed half-open trial opens the breaker again for another recovery timeout."""
    clock = FakeClock()
    breaker = CircuitBreaker(2, 10.0, clock=clock)
    trip(breaker, 2)
    clock.now += 10.0
    trip(breaker, 1)  # the trial
    assert breaker.state == "open"
    ran: list[int] = []
    with pytest.raises(CircuitOpenError):
        breaker.call(lambda: ran.append(1))
    assert ran == []
    clock.now += 10.0
    assert breaker.state == "half_open"


def test_while_a_trial_is_out_others_are_told_to_wait_for_it() -> None:
    """retry_in() and the refusal's message count down to the trial's expiry, not to zero."""
    clock = FakeClock()
    breaker = CircuitBreaker(1, 10.0, name="main", clock=clock)
    trip(breaker, 1)
    assert breaker.retry_in() == pytest.approx(10.0)
    clock.now += 10.0
    assert breaker.before_call() is True  # the trial goes; it expires at +20 s
    clock.now += 1.0
    assert breaker.retry_in() == pytest.approx(9.0)
    with pytest.raises(CircuitOpenError, match=r"next trial in 9\.0 s"):
        breaker.before_call()
    breaker.release_trial()
    assert breaker.retry_in() == 0.0
    assert breaker.before_call() is True


@db
def test_a_trial_that_fails_without_proving_anything_hands_the_trial_to_the_next_caller(
    settings: Any,
) -> None:
    """A half-open trial that fails for a reason that is not the database's gives the trial back.

    Otherwise every caller fails fast for another recovery timeout against a
    database that may well be back.
    """
    with_pools(
        settings,
        CIRCUIT_BREAKER={"ENABLED": True, "FAILURE_THRESHOLD": 1, "RECOVERY_TIMEOUT": 0.05},
    )
    breaker = get_circuit_breaker()
    breaker.record_failure()
    assert breaker.state == "open"
    time.sleep(0.06)
    engine = get_engine()

    def refuse(*args: Any) -> None:
        raise Boom("not the database's fault")

    event.listen(engine, "checkout", refuse)
    try:
        with pytest.raises(Boom), session_scope():
            pass
    finally:
        event.remove(engine, "checkout", refuse)
    assert breaker.state == "half_open"
    with session_scope() as session:  # the next caller is the trial, at once
        session.execute(text("SELECT 1"))
    assert breaker.state == "closed"
    assert checked_out() == 0


def test_breaker_admits_exactly_one_trial_among_racing_threads() -> None:
    """Among 8 threads racing a half-open breaker exactly one runs the function."""
    clock = FakeClock()
    breaker = CircuitBreaker(1, 10.0, clock=clock)
    trip(breaker, 1)
    clock.now += 10.0
    start = threading.Barrier(8)
    refused = threading.Semaphore(0)
    release = threading.Event()
    lock = threading.Lock()
    ran: list[int] = []
    outcomes: list[str] = []

    def trial() -> str:
        with lock:
            ran.append(1)
        release.wait(10)  # keep the trial out while the others try
        return "ok"

    def worker() -> None:
        start.wait(10)
        try:
            result = breaker.call(trial)
        except CircuitOpenError:
            result = "refused"
            refused.release()
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for _ in range(7):
        assert refused.acquire(timeout=10)
    release.set()
    for thread in threads:
        thread.join(10)
    assert len(ran) == 1
    assert sorted(outcomes) == ["ok"] + ["refused"] * 7
    assert breaker.state == "closed"


def test_breaker_data_errors_do_not_count() -> None:
    """Data errors (IntegrityError) pass through and leave the breaker's count alone."""
    breaker = CircuitBreaker(2, 10.0, clock=FakeClock())

    def data_error() -> None:
        raise sa_exc.IntegrityError("stmt", {}, Exception())

    for _ in range(5):
        with pytest.raises(sa_exc.IntegrityError):
            breaker.call(data_error)
    assert breaker.failures == 0
    assert breaker.state == "closed"

    def other_error() -> None:
        raise Boom

    for _ in range(5):
        with pytest.raises(Boom):
            breaker.call(other_error)
    assert breaker.state == "closed"


def test_breaker_counts_correctly_under_threads() -> None:
    """8 threads failing 100 times each are all counted, and the breaker opens at the threshold."""
    breaker = CircuitBreaker(801, 10.0, clock=FakeClock())
    start = threading.Barrier(8)

    def worker() -> None:
        start.wait(10)
        for _ in range(100):
            with contextlib.suppress(DatabaseUnavailableError):
                breaker.call(unavailable)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert breaker.failures == 800
    assert breaker.state == "closed"
    trip(breaker, 1)
    assert breaker.state == "open"


# -- circuit breaker wired into session_scope -------------------------------------------------


@pytest.fixture
def dead_pool(settings: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    """A pool "dead" on a PostgreSQL alias whose port nothing listens on."""
    add_unreachable_alias(monkeypatch, "dead")
    with_pools(
        settings,
        dead={"DATABASE": "dead", "POOL_SIZE": 2, "MAX_OVERFLOW": 0, "POOL_TIMEOUT": 10},
        CIRCUIT_BREAKER={"ENABLED": True, "FAILURE_THRESHOLD": 3, "RECOVERY_TIMEOUT": 0.5},
    )
    return "dead"


@db
def test_breaker_in_session_scope_against_unreachable_server(dead_pool: str) -> None:
    """Against a refused port: 3 fast DatabaseUnavailableErrors, then fail-fast, then one trial."""
    pytest.importorskip("psycopg")
    engine = get_engine(dead_pool)
    attempts: list[int] = []

    @event.listens_for(engine, "do_connect")
    def count(*args: Any) -> None:
        attempts.append(1)

    def select_one() -> None:
        with session_scope(dead_pool) as session:
            session.execute(text("SELECT 1"))

    for n in range(1, 4):
        started = time.monotonic()
        with pytest.raises(DatabaseUnavailableError) as info:
            select_one()
        assert time.monotonic() - started < 2.0  # refused at once, not the pool's 10 s
        assert type(info.value) is DatabaseUnavailableError
        assert info.value.pool == dead_pool
        assert isinstance(info.value.__cause__, sa_exc.OperationalError)
        assert len(attempts) == n
    breaker = get_circuit_breaker(dead_pool)
    assert breaker.state == "open"
    assert breaker.failures == 3

    with pytest.raises(CircuitOpenError) as fast:
        select_one()
    assert fast.value.pool == dead_pool
    assert len(attempts) == 3
    assert breaker.failures == 3

    time.sleep(0.55)
    assert breaker.state == "half_open"
    start = threading.Barrier(4)
    outcomes: list[BaseException] = []
    lock = threading.Lock()

    def racer() -> None:
        start.wait(10)
        try:
            select_one()
        except BaseException as exc:
            with lock:
                outcomes.append(exc)

    threads = [threading.Thread(target=racer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    kinds = sorted(type(exc).__name__ for exc in outcomes)
    assert kinds == ["CircuitOpenError"] * 3 + ["DatabaseUnavailableError"]
    assert len(attempts) == 4  # exactly one trial connected
    assert breaker.state == "open"
    assert checked_out(dead_pool) == 0
    assert state.sessions.active_sessions == 0


# -- R10: the connection lost at COMMIT ------------------------------------------------------------


def lose_connection_once(monkeypatch: pytest.MonkeyPatch, method: str) -> list[str]:
    """Make the dialect's ``method`` fail once as a dropped connection does; returns its calls."""
    dialect = get_engine().dialect
    dbapi_error = dialect.loaded_dbapi.OperationalError
    original = getattr(dialect, method)
    calls: list[str] = []

    def lost_once(*args: Any) -> Any:
        calls.append(method)
        if len(calls) == 1:
            raise dbapi_error("connection lost (injected)")
        return original(*args)

    def is_disconnect(error: Exception, connection: Any, cursor: Any) -> bool:
        return "(injected)" in str(error)

    monkeypatch.setattr(dialect, method, lost_once)
    monkeypatch.setattr(dialect, "is_disconnect", is_disconnect)
    return calls


@db
def test_connection_lost_during_commit_is_an_unknown_outcome_never_retried(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every statement ran, then COMMIT broke: the caller is told the outcome is unknown."""
    calls = lose_connection_once(monkeypatch, "do_commit")
    attempts: list[int] = []

    def write() -> None:
        attempts.append(1)
        with session_scope() as session:
            insert(session, "maybe")

    with pytest.raises(CommitOutcomeUnknownError) as info:
        execute_with_retry(write, max_retries=3, base_delay=0.0)
    error = info.value
    assert isinstance(error, mingus_sessions.TransactionError)
    assert error.pool == "main"
    assert error.transient is False
    assert "unknown" in str(error)
    assert "connection lost (injected)" in str(error)
    assert isinstance(error.__cause__, sa_exc.OperationalError)
    assert error.__cause__.connection_invalidated
    # Retrying could apply the work twice: it ran once.
    assert len(attempts) == 1
    assert calls == ["do_commit"]
    assert state.sessions.failed_sessions == 1
    assert checked_out() == 0
    # The connection was invalidated; the pool serves a new one.
    with session_scope() as session:
        insert(session, "after")
    assert "after" in titles()


@db
def test_connection_lost_while_flushing_before_commit_is_a_known_rollback_and_retried(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Pending ORM rows flushed at commit: a disconnect then means nothing was committed."""
    lose_connection_once(monkeypatch, "do_execute")
    attempts: list[int] = []

    def write() -> None:
        attempts.append(1)
        with session_scope() as session:
            session.add(NoteRow(title="once", body=""))

    execute_with_retry(write, max_retries=2, base_delay=0.0)
    assert len(attempts) == 2  # the first flush failed before COMMIT, so it was retried
    assert titles() == ["once"]
    assert checked_out() == 0


@db
def test_a_failure_of_another_pool_counts_only_against_that_pools_breaker(
    dead_pool: str,
) -> None:
    """A scope of an unreachable pool fails inside a scope of a healthy one: one breaker counts."""
    pytest.importorskip("psycopg")
    with pytest.raises(DatabaseUnavailableError), session_scope() as healthy:
        healthy.execute(text("SELECT 1"))
        with session_scope(dead_pool) as dead:
            dead.execute(text("SELECT 1"))
    assert get_circuit_breaker(dead_pool).failures == 1
    assert get_circuit_breaker().failures == 0
    assert checked_out() == 0


@db
@pytest.mark.parametrize("how", ["session.rollback()", "a failed flush"])
def test_callbacks_of_a_transaction_rolled_back_inside_the_scope_are_dropped(how: str) -> None:
    """The scope goes on in a new transaction and commits: only that one's callbacks run."""
    ran: list[str] = []
    with session_scope() as session:
        insert(session, "taken")
        session.commit()
        on_commit(lambda: ran.append("rolled back"))
        if how == "session.rollback()":
            insert(session, "lost")
            session.rollback()
        else:
            session.add(NoteRow(title="taken"))
            with pytest.raises(sa_exc.IntegrityError):
                session.flush()
            session.rollback()
        on_commit(lambda: ran.append("committed"))
        insert(session, "kept")
    assert ran == ["committed"]
    assert titles() == ["kept", "taken"]


@db
def test_callbacks_wait_for_the_scopes_end_after_a_commit_of_its_own() -> None:
    """The scope's code commits and goes on: every callback runs once the scope ends, in order."""
    ran: list[str] = []
    with session_scope() as session:
        insert(session, "first")
        on_commit(lambda: ran.append("before the commit"))
        session.commit()
        assert ran == []
        insert(session, "second")
        on_commit(lambda: ran.append("after the commit"))
    assert ran == ["before the commit", "after the commit"]
    assert titles() == ["first", "second"]


@db
@pytest.mark.parametrize("how", ["an exception", "a failed commit"])
def test_callbacks_of_a_commit_of_its_own_run_when_the_scope_then_fails(how: str) -> None:
    """What the scope's code committed stays, and so do the callbacks that waited for it.

    They run once the scope is over, not inside it: a callback that opens a
    scope gets a transaction of its own. The scope's failure goes on.
    """
    ran: list[str] = []

    def follow_up() -> None:
        with session_scope() as session:
            ran.append(f"nested: {session.in_nested_transaction()}")
            insert(session, "follow-up")

    expected: type[BaseException] = ValueError if how == "an exception" else sa_exc.IntegrityError
    with pytest.raises(expected), session_scope() as session:
        insert(session, "taken")
        on_commit(follow_up)
        session.commit()
        on_commit(lambda: ran.append("rolled back"))
        insert(session, "lost")
        if how == "an exception":
            raise ValueError("the scope fails after its own commit")
        session.add(NoteRow(title="taken"))  # the scope's flush at its end fails
    assert ran == ["nested: False"]
    assert titles() == ["follow-up", "taken"]
    assert checked_out() == 0


@db
def test_callbacks_of_a_commit_survive_another_after_commit_listener_that_raises() -> None:
    """The COMMIT went through; a listener of the session's then failed: the callback still runs."""
    ran: list[str] = []

    def broken_listener(session: Session) -> None:
        raise RuntimeError("a listener of the application fails after the commit")

    with pytest.raises(RuntimeError, match="listener"), session_scope() as session:
        event.listen(session, "after_commit", broken_listener)
        insert(session, "committed")
        on_commit(lambda: ran.append("committed"))
        session.commit()
    assert titles() == ["committed"]
    assert ran == ["committed"]


@db
def test_a_failing_callback_of_a_failing_scope_is_noted_on_the_scopes_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The scope's own failure is raised; the callback's is logged and added to it as a note."""

    def broken() -> None:
        raise RuntimeError("broker down")

    with pytest.raises(ValueError, match="the scope fails") as raised, session_scope() as session:
        insert(session, "taken")
        on_commit(broken)
        session.commit()
        raise ValueError("the scope fails")
    notes = getattr(raised.value, "__notes__", [])
    assert len(notes) == 1
    assert "committed, but" in notes[0]
    assert "broken" in notes[0]
    assert "RuntimeError" in notes[0]
    assert "broker down" in caplog.text
    assert titles() == ["taken"]


@db
def test_inner_scope_that_caught_its_failed_flush_rolls_back_and_says_so() -> None:
    """The flush's error was caught inside the inner scope, which then exits normally.

    Its savepoint is deactivated: the inner scope rolls it back and raises
    TransactionError, and the outer scope goes on and commits (every database).
    """
    with session_scope() as outer:
        insert(outer, "taken")
        refused = pytest.raises(mingus_sessions.TransactionError, match="savepoint on pool")
        with refused, session_scope() as inner:
            inner.add(NoteRow(title="taken"))
            with contextlib.suppress(sa_exc.IntegrityError):
                inner.flush()
        insert(outer, "after")
    assert titles() == ["after", "taken"]
    assert checked_out() == 0


@db
def test_a_failure_counts_once_against_its_breaker_whatever_scopes_it_leaves(
    dead_pool: str,
) -> None:
    """An independent scope's connect failure, raised through a scope of the same pool."""
    pytest.importorskip("psycopg")
    outer, inner = session_scope(dead_pool), session_scope(dead_pool, independent=True)
    with pytest.raises(DatabaseUnavailableError), outer, inner as session:
        session.execute(text("SELECT 1"))
    assert get_circuit_breaker(dead_pool).failures == 1


@db
@pytest.mark.postgresql
def test_caught_error_on_a_connection_invalidated_since_still_refuses_the_commit() -> None:
    """A statement error was caught, then the connection was invalidated: TransactionError."""
    refused = pytest.raises(mingus_sessions.TransactionError, match="aborted by an earlier")
    with refused, session_scope() as session:
        with contextlib.suppress(sa_exc.ProgrammingError):
            session.execute(text("SELECT * FROM no_such_table"))
        session.connection().invalidate()
    assert checked_out() == 0
