"""DatabaseTask in-process: the three ways to declare one, and every way a call ends (C1).

Each call commits or rolls back and closes its session, whatever happens in it.
"""

from __future__ import annotations

from typing import Any

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session

from mingus_sessions import DeadlockError, SessionError, current_session, get_engine
from mingus_sessions._core.state import state
from mingus_sessions.celery import TaskDatabase
from tests.celery.inprocess import (
    ACTIONS,
    CALLS,
    DB,
    DB_OTHER,
    app,
    assert_closed,
    autoretrying,
    insert,
    lazy,
    other_pool_write,
    published,
    raises,
    savepoints,
    scripted,
    send_sms,
    shared_write,
    task,
    titles,
    unbound_write,
)

#: The queue drained and the calls' records cleared around every test (tests/celery/conftest.py).
pytestmark = pytest.mark.usefixtures("_clean")


class Interrupt(BaseException):
    """Not an Exception: what KeyboardInterrupt or SystemExit look like to a scope."""


# -- DatabaseTask: the three ways to declare one ---------------------------------------------


@DB
def test_shared_task_bound_commits_on_the_calls_session() -> None:
    """@shared_task(bind=True, base=DatabaseTask): self.db_session.session is the call's."""
    result = task(shared_write).apply(args=("shared",))
    assert result.successful(), result.traceback
    assert result.get() == "shared"
    (call,) = CALLS
    assert call["session"] is call["current"]
    assert call["celery_helper"] is call["helper"]
    assert isinstance(call["helper"], TaskDatabase)
    assert call["helper"].pool == "main"  # CELERY_POOL falls back to the default pool
    assert titles() == ["shared"]
    assert_closed()
    assert state.sessions.committed_transactions >= 1


@DB
def test_app_task_unbound_uses_get_celery_db_session_and_current_session() -> None:
    """@app.task(base=DatabaseTask) without bind: the helpers give the call's session."""
    result = unbound_write.apply(args=("unbound",))
    assert result.successful(), result.traceback
    (call,) = CALLS
    assert call["helper_session"] is call["session"]
    assert titles() == ["unbound"]
    assert_closed()


@DB
def test_subclass_with_run_scope_is_a_savepoint_on_the_calls_session() -> None:
    """The seeds' SendSMSTask: session_scope() in run() is a SAVEPOINT on the call's session."""
    result = send_sms.apply(args=(7, "hello"))
    assert result.successful(), result.traceback
    (call,) = CALLS
    assert call["session"] is call["call_session"]
    assert titles() == ["sms-7"]
    assert state.sessions.savepoints == 1
    assert_closed()


@DB
def test_scopes_inside_a_task_are_savepoints() -> None:
    """A failing inner scope undoes only its own work; the call commits the rest."""
    result = savepoints.apply()
    assert result.successful(), result.traceback
    assert CALLS[0] == {"same": True, "nested": True}
    assert titles() == ["after-savepoints", "kept-in-savepoint"]
    assert_closed()


@DB_OTHER
def test_db_pool_selects_the_pool() -> None:
    """db_pool="other": the call's session is on the pool "other" and its database."""
    result = other_pool_write.apply(args=("elsewhere",))
    assert result.successful(), result.traceback
    (call,) = CALLS
    assert call["helper"].pool == "other"
    assert call["session"] is call["current"]
    assert titles("other") == ["elsewhere"]
    assert titles("main") == []
    assert_closed()


@DB
def test_a_task_that_never_uses_the_database_checks_out_nothing() -> None:
    checkouts: list[int] = []
    engine = get_engine()

    def on_checkout(*args: Any) -> None:
        checkouts.append(1)

    from sqlalchemy import event

    event.listen(engine, "checkout", on_checkout)
    try:
        assert lazy.apply().get() == "done"
    finally:
        event.remove(engine, "checkout", on_checkout)
    assert checkouts == []
    assert state.sessions.total_sessions == 0


def test_db_session_outside_a_call_is_a_helper_without_session() -> None:
    """self.db_session between calls: a helper on the task's pool whose .session refuses."""
    helper = task(other_pool_write).db_session
    assert isinstance(helper, TaskDatabase)
    assert helper.pool == "other"
    with pytest.raises(SessionError, match="only during a DatabaseTask call"):
        helper.session  # noqa: B018


# -- every outcome rolls back or commits, and closes ------------------------------------------


@DB
def test_failure_rolls_back_and_closes() -> None:
    ACTIONS.append(raises(ValueError("boom")))
    result = scripted.apply(args=("failed",))
    assert result.failed()
    assert isinstance(result.result, ValueError)
    assert len(CALLS) == 1
    assert titles() == []
    assert_closed()
    assert state.sessions.retries == 0
    assert state.sessions.failed_sessions == 1


@DB
def test_eager_propagation_raises_and_rolls_back() -> None:
    """apply(throw=True) and eager delay() with task_eager_propagates raise, after rollback."""
    ACTIONS.append(raises(ValueError("thrown")))
    with pytest.raises(ValueError, match="thrown"):
        scripted.apply(args=("thrown",), throw=True)
    assert_closed()
    app.conf.update(task_always_eager=True, task_eager_propagates=True)
    try:
        ACTIONS.append(raises(KeyError("eager")))
        with pytest.raises(KeyError, match="eager"):
            scripted.delay("eager")
        assert scripted.delay("eager-ok").get() == "eager-ok"
    finally:
        app.conf.update(task_always_eager=False, task_eager_propagates=False)
    assert titles() == ["eager-ok"]
    assert_closed()
    assert published() == []  # eager: nothing went to the broker


@DB
def test_soft_time_limit_inside_the_task_rolls_back_and_is_not_retried() -> None:
    ACTIONS.append(raises(SoftTimeLimitExceeded()))
    result = scripted.apply(args=("too-slow",))
    assert result.failed()
    assert isinstance(result.result, SoftTimeLimitExceeded)
    assert len(CALLS) == 1
    assert titles() == []
    assert_closed()


@pytest.mark.parametrize("exc_type", [Interrupt, KeyboardInterrupt, SystemExit])
@DB
def test_base_exception_rolls_back_closes_and_propagates(exc_type: type[BaseException]) -> None:
    """KeyboardInterrupt-like exceptions go through the tracer; the call still cleans up."""
    ACTIONS.append(raises(exc_type()))
    with pytest.raises(exc_type):
        scripted.apply(args=("interrupted",))
    assert titles() == []
    assert_closed()
    # Nothing of the interrupted call is left active in this context.
    with pytest.raises(SessionError):
        current_session()
    assert scripted.apply(args=("next",)).successful()
    assert titles() == ["next"]
    assert_closed()


@DB
def test_no_database_state_is_kept_on_the_task_instance() -> None:
    """Calls that succeed, fail and retry keep no session or helper on the shared instance."""
    from mingus_sessions.sessions import LazyScope

    instance = task(scripted)
    before = dict(vars(instance))
    ACTIONS.extend([None, raises(ValueError()), raises(DeadlockError("x", pool="main")), None])
    scripted.apply(args=("one",))
    scripted.apply(args=("two",))
    scripted.apply(args=("three",))
    after = dict(vars(instance))
    assert after.keys() == before.keys()  # nothing added, not even Celery's retry override
    forbidden = (Session, TaskDatabase, LazyScope)
    for name, value in after.items():
        assert not isinstance(value, forbidden), name
        assert value is before[name], name
    assert titles() == ["one", "three"]
    assert_closed()


@DB
def test_a_database_retry_leaves_celerys_max_retries_alone() -> None:
    """A DB retry in one call must not change how many times a later call may autoretry.

    (Celery's retry(max_retries=...) stores an override on the process-wide task
    instance, which autoretry_for of later calls would pick up.)
    """
    ACTIONS.extend([raises(DeadlockError("x", pool="main")), None])
    assert autoretrying.apply(args=("first",)).successful()
    CALLS.clear()
    ACTIONS.extend([raises(KeyError("app error"))] * 10)
    assert autoretrying.apply(args=("second",)).failed()
    # max_retries=3: the first attempt and three autoretries.
    assert [call["retries"] for call in CALLS] == [0, 1, 2, 3]
    assert not hasattr(task(autoretrying), "override_max_retries")


@DB
def test_the_next_call_after_a_poisoned_one_gets_a_fresh_session() -> None:
    """C1 in-process: a call leaving an IntegrityError unhandled; the next call works."""
    assert scripted.apply(args=("dup",)).successful()

    def swallow_integrity_error() -> None:
        session = current_session()
        with pytest.raises(sa_exc.IntegrityError):
            insert(session, "dup")
        raise ValueError("give up with a failed transaction")

    ACTIONS.append(swallow_integrity_error)
    assert scripted.apply(args=("poisoned",)).failed()
    assert scripted.apply(args=("healthy",)).successful()
    _first, poisoned, healthy = (call["session"] for call in CALLS)
    assert healthy is not poisoned
    assert titles() == ["dup", "healthy"]
    assert_closed()


SILENT_ROLLBACK = (
    "On PostgreSQL a statement error aborts the whole transaction; if the code catches the "
    "error and the scope (or task call) ends normally, its COMMIT is turned into ROLLBACK by "
    "the server and neither psycopg nor SQLAlchemy raises, so session_scope()/DatabaseTask "
    "report success for writes that were not committed (Django's atomic() behaves the same)"
)


@DB
@pytest.mark.postgresql
def test_a_call_whose_transaction_the_server_aborted_does_not_report_success() -> None:
    """A task that swallowed an IntegrityError: either its first write commits, or it fails."""
    assert scripted.apply(args=("taken",)).successful()

    def swallow() -> None:
        with pytest.raises(sa_exc.IntegrityError):
            insert(current_session(), "taken")

    ACTIONS.append(swallow)
    result = scripted.apply(args=("written-first",))
    assert_closed()
    assert result.failed() or titles() == ["taken", "written-first"]


@DB
def test_direct_call_runs_in_a_transaction_of_its_own() -> None:
    """Calling the task object directly (no tracer) still commits, rolls back and closes."""
    assert scripted("direct") == "direct"
    ACTIONS.append(raises(ValueError("direct failure")))
    with pytest.raises(ValueError):
        scripted("direct-failed")
    assert titles() == ["direct"]
    assert_closed()


@DB
def test_direct_call_keeps_celerys_request_context() -> None:
    """A direct call of a Celery task pushes a request with its args (Task.__call__)."""
    from celery import current_task

    seen: list[Any] = []

    def look() -> None:
        seen.append((tuple(task(scripted).request.args or ()), getattr(current_task, "name", None)))

    ACTIONS.append(look)
    scripted("ctx")
    assert seen == [(("ctx",), scripted.name)]
