"""The Celery helpers in-process: TaskDatabase.execute_with_retry, get_celery_db_session,
with_celery_db_session and TransactionManager."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session

from mingus_sessions import DeadlockError, SessionError, current_session
from mingus_sessions._core.state import state
from mingus_sessions.celery import (
    TaskDatabase,
    TransactionManager,
    get_celery_db_session,
    with_celery_db_session,
)
from tests.celery.inprocess import (
    ACTIONS,
    CALLS,
    DB,
    DB_OTHER,
    assert_closed,
    helper_then_transient,
    insert,
    other_pool_write,
    raises,
    shared_write,
    task,
    titles,
    with_retry_helper,
)

#: The queue drained and the calls' records cleared around every test (tests/celery/conftest.py).
pytestmark = pytest.mark.usefixtures("_clean")


# -- TaskDatabase.execute_with_retry and get_celery_db_session --------------------------------


@DB
def test_execute_with_retry_runs_each_attempt_in_its_own_transaction() -> None:
    """A deadlocked attempt leaves nothing; the good attempt commits even if the call fails."""
    ACTIONS.append(raises(DeadlockError("injected", pool="main")))
    result = with_retry_helper.apply(args=(True,))
    assert result.failed()
    assert isinstance(result.result, ValueError)
    attempts = [call for call in CALLS if "nested" in call]
    assert len(attempts) == 2
    # Attempts are transactions of their own, not savepoints on the call's session.
    assert not any(call["nested"] for call in attempts)
    assert CALLS[-1] == {"result": "attempt-1"}
    # attempt-0 deadlocked (rolled back), attempt-1 committed, the call rolled back.
    assert titles() == ["attempt-1"]
    assert state.sessions.retries == 1
    assert_closed()


@DB
def test_execute_with_retry_and_the_call_both_commit() -> None:
    result = with_retry_helper.apply(args=(False,))
    assert result.successful(), result.traceback
    assert titles() == ["attempt-0", "call-write"]
    assert state.sessions.retries == 0
    assert_closed()


@DB
def test_a_retried_call_runs_the_helpers_committed_work_again() -> None:
    """What execute_with_retry() committed stays committed, and the task's retry does it again.

    docs/celery.md says so: such work must be idempotent.
    """
    result = helper_then_transient.apply()
    assert result.successful(), result.traceback
    assert titles() == ["call-run-1", "helper-run-0", "helper-run-1"]
    assert state.sessions.retries == 1
    assert_closed()


@DB
def test_execute_with_retry_max_retries() -> None:
    helper = get_celery_db_session()
    attempts: list[int] = []

    def always() -> None:
        attempts.append(1)
        with helper.session_scope() as session:
            insert(session, f"try-{len(attempts)}")
            raise DeadlockError("again", pool="main")

    with pytest.raises(DeadlockError):
        helper.execute_with_retry(always, max_retries=2, base_delay=0.001, max_delay=0.002)
    assert len(attempts) == 3
    assert titles() == []
    assert_closed()


@DB
def test_get_celery_db_session_outside_a_task() -> None:
    helper = get_celery_db_session()
    assert isinstance(helper, TaskDatabase)
    assert helper.pool == "main"  # no "celery" pool: CELERY_POOL falls back to "main"
    with pytest.raises(SessionError):
        helper.session  # noqa: B018
    with helper.session_scope() as session:
        insert(session, "outside")
        assert not session.in_nested_transaction()
    assert titles() == ["outside"]
    assert get_celery_db_session("other").pool == "other"
    assert "main" in repr(helper)
    assert_closed()


@DB_OTHER
def test_get_celery_db_session_inside_a_task_is_the_calls_helper() -> None:
    assert task(shared_write).apply(args=("inside",)).successful()
    (call,) = CALLS
    assert call["celery_helper"] is call["helper"]
    assert call["celery_helper"].session is call["session"]
    # In a call on "other", get_celery_db_session() is that call's helper; asked for
    # another pool, it gives a plain helper on that pool.
    assert other_pool_write.apply(args=("o",)).successful()
    assert CALLS[1]["celery_helper"] is CALLS[1]["helper"]
    assert CALLS[1]["celery_helper"].pool == "other"
    main_helper = CALLS[1]["main_helper"]
    assert main_helper is not CALLS[1]["helper"]
    assert main_helper.pool == "main"
    with pytest.raises(SessionError):
        main_helper.session  # noqa: B018


# -- with_celery_db_session ------------------------------------------------------------------


@DB_OTHER
def test_with_celery_db_session_passes_session_and_commits() -> None:
    @with_celery_db_session()
    def write(title: str, *, session: Session) -> Session:
        insert(session, title)
        assert current_session() is session
        return session

    session = write("decorated")
    assert titles() == ["decorated"]
    assert not session.in_transaction()

    @with_celery_db_session("other")
    def fail(*, session: Session) -> None:
        insert(session, "never")
        raise ValueError("rolled back")

    with pytest.raises(ValueError):
        fail()
    assert titles("other") == []
    assert_closed()


# -- TransactionManager ------------------------------------------------------------------------


@DB_OTHER
def test_named_transaction_records_counts_failures_and_durations() -> None:
    manager = TransactionManager()
    with manager.named_transaction("import-users") as session:
        insert(session, "u1")
        time.sleep(0.03)
    with manager.named_transaction("import-users") as session:
        insert(session, "u2")
    with pytest.raises(ValueError), manager.named_transaction("import-users") as session:
        insert(session, "u3")
        raise ValueError("bad row")
    with manager.named_transaction("other-name", pool="other") as session:
        insert(session, "o1")
    stats = state.transactions.snapshot()
    assert set(stats) == {"import-users", "other-name"}
    users = stats["import-users"]
    assert set(users) == {"count", "failures", "avg_ms", "max_ms"}
    assert users["count"] == 3
    assert users["failures"] == 1
    assert users["max_ms"] >= 30.0
    assert 10.0 <= users["avg_ms"] <= users["max_ms"]
    assert stats["other-name"]["count"] == 1
    assert stats["other-name"]["failures"] == 0
    assert titles() == ["u1", "u2"]
    assert titles("other") == ["o1"]
    assert_closed()


@DB
def test_named_transaction_counts_a_failed_commit() -> None:
    manager = TransactionManager()
    with manager.named_transaction("seed") as session:
        insert(session, "same")
    with pytest.raises(sa_exc.IntegrityError), manager.named_transaction("seed") as session:
        insert(session, "same")
    assert state.transactions.snapshot()["seed"]["failures"] == 1


@DB_OTHER
def test_batch_transaction_commits_all_and_returns_results() -> None:
    manager = TransactionManager(pool="other")

    def op(title: str) -> Callable[[Session], str]:
        def run(session: Session) -> str:
            insert(session, title)
            return title.upper()

        return run

    assert manager.batch_transaction([op("a"), op("b"), op("c")], "batch") == ["A", "B", "C"]
    assert titles("other") == ["a", "b", "c"]
    assert titles("main") == []
    assert state.transactions.snapshot()["batch"]["count"] == 1


@DB
def test_batch_transaction_is_all_or_nothing() -> None:
    manager = TransactionManager()
    ran: list[str] = []

    def write(title: str) -> Callable[[Session], None]:
        def run(session: Session) -> None:
            ran.append(title)
            insert(session, title)

        return run

    def fail(session: Session) -> None:
        ran.append("fail")
        raise RuntimeError("operation 3 failed")

    with pytest.raises(RuntimeError, match="operation 3"):
        manager.batch_transaction([write("x"), write("y"), fail, write("z")], "batch")
    assert ran == ["x", "y", "fail"]
    assert titles() == []
    # A database failure midway (duplicate in the same batch) rolls back the same way.
    with pytest.raises(sa_exc.IntegrityError):
        manager.batch_transaction([write("p"), write("q"), write("p")], "batch")
    assert titles() == []
    stats = state.transactions.snapshot()["batch"]
    assert (stats["count"], stats["failures"]) == (2, 2)
    assert_closed()
