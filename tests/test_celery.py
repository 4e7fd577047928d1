"""mingus_sessions.celery in-process: DatabaseTask, retries, helpers, on_commit (C1, C2, C4, C5).

Tasks run through Celery's own tracer (``task.apply()``, eager ``delay()``), so
``__call__``, ``self.request`` and ``retry()`` behave as in a worker, without
one; tests/celery/test_workers.py does the same things with real workers.

Publishing is observed on Celery's in-memory broker (``memory://``, a queue per
module run), or on an app whose broker is a closed port (C5).
"""

from __future__ import annotations

import logging
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from celery import Celery, shared_task
from celery.exceptions import Retry, SoftTimeLimitExceeded
from django.db import transaction
from kombu.exceptions import OperationalError as KombuOperationalError
from sqlalchemy import event, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session

from mingus_sessions import (
    AfterCommitError,
    AuthenticationError,
    CircuitOpenError,
    ConfigurationError,
    ConnectionTimeoutError,
    DatabaseUnavailableError,
    DeadlockError,
    LockTimeoutError,
    PoolExhaustedError,
    SerializationError,
    SessionError,
    TransactionError,
    current_session,
    get_engine,
    on_commit,
    session_scope,
)
from mingus_sessions._core.state import state
from mingus_sessions.celery import (
    DatabaseTask,
    TaskDatabase,
    TransactionManager,
    classify_error,
    get_celery_db_session,
    get_retry_delay,
    should_retry,
    with_celery_db_session,
)
from tests.helpers import NoteRow

#: Tasks commit through their own sessions, so tests that touch the database see real
#: commits (transaction=True); the pure policy tests need no database at all.
DB = pytest.mark.django_db(transaction=True)
#: Tests that also write to the database of the pool "other" (flushed after them too).
DB_OTHER = pytest.mark.django_db(transaction=True, databases=["default", "other"])

QUEUE = f"mingus-test-inprocess-{uuid.uuid4().hex[:12]}"

app = Celery("mingus-tests-inprocess", set_as_current=False)
app.conf.update(
    broker_url="memory://",
    task_default_queue=QUEUE,
    task_eager_propagates=False,
    task_always_eager=False,
    broker_connection_retry_on_startup=True,
)


# -- helpers ------------------------------------------------------------------------------


def insert(session: Session, title: str, body: str = "") -> None:
    session.execute(
        text("INSERT INTO testapp_note (title, body) VALUES (:t, :b)"), {"t": title, "b": body}
    )


def titles(pool: str | None = None) -> list[str]:
    with session_scope(pool) as session:
        return sorted(session.execute(text("SELECT title FROM testapp_note")).scalars())


def titles_from_a_raw_connection() -> list[str]:
    """What another connection sees, read without any scope."""
    with get_engine().connect() as conn:
        return sorted(conn.execute(text("SELECT title FROM testapp_note")).scalars())


def checked_out(pool: str = "main") -> int:
    """Connections of ``pool`` checked out now.

    0 for a StaticPool, which counts nothing: the engine of a plain in-memory
    SQLite database that this test did not ask pytest-django to set up.
    """
    counted = getattr(get_engine(pool).pool, "checkedout", None)
    return int(counted()) if counted is not None else 0


def published(queue: str = QUEUE) -> list[tuple[str, tuple[Any, ...], dict[str, Any]]]:
    """Take every message waiting on the in-memory broker's queue: (task, args, kwargs)."""
    found: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
    with app.connection_for_read() as conn:
        simple = conn.SimpleQueue(queue, no_ack=True)
        try:
            while True:
                try:
                    message = simple.get(block=False)
                except simple.Empty:
                    break
                args, kwargs, _embed = message.decode()
                found.append((message.headers["task"], tuple(args), kwargs))
        finally:
            simple.close()
    return found


class FakeDriverError(Exception):
    """A DB-API error as psycopg raises it: only its SQLSTATE matters here."""

    def __init__(self, message: str, sqlstate: str) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


def driver_error(cls: type[sa_exc.DBAPIError], sqlstate: str) -> sa_exc.DBAPIError:
    return cls("UPDATE t SET x = 1", None, FakeDriverError(f"sqlstate {sqlstate}", sqlstate))


class Interrupt(BaseException):
    """Not an Exception: what KeyboardInterrupt or SystemExit look like to a scope."""


def closed_port() -> int:
    """A local TCP port nobody listens on (connections are refused at once)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# -- tasks ----------------------------------------------------------------------------------

#: Per call of `scripted`, in order: what to do after writing (None: return normally).
ACTIONS: list[Callable[[], Any] | None] = []
#: What each task call saw.
CALLS: list[dict[str, Any]] = []


@pytest.fixture(autouse=True)
def _clean() -> Iterator[None]:
    ACTIONS.clear()
    CALLS.clear()
    state.transactions.reset()
    published()
    yield
    ACTIONS.clear()
    CALLS.clear()
    published()


def _record(task: Any, session: Session | None = None) -> dict[str, Any]:
    seen = {
        "retries": task.request.retries,
        "session": session,
        "helper": task.db_session,
        "current": current_session(task.db_session.pool) if session is not None else None,
        "celery_helper": get_celery_db_session(),
    }
    CALLS.append(seen)
    return seen


@shared_task(bind=True, base=DatabaseTask, name="tests.celery.shared_write")
def shared_write(self: DatabaseTask, title: str) -> str:
    session = self.db_session.session
    _record(self, session)
    insert(session, title)
    return title


@app.task(base=DatabaseTask, name="tests.celery.unbound_write")
def unbound_write(title: str) -> str:
    helper = get_celery_db_session()
    session = current_session()
    CALLS.append({"helper": helper, "session": session, "helper_session": helper.session})
    insert(session, title)
    return title


@app.task(bind=True, base=DatabaseTask, name="tests.celery.scripted")
def scripted(self: DatabaseTask, title: str) -> str:
    """Writes `title` in the call's transaction, then runs the next action of ACTIONS."""
    session = self.db_session.session
    _record(self, session)
    insert(session, title)
    action = ACTIONS.pop(0) if ACTIONS else None
    if action is not None:
        action()
    return title


@app.task(bind=True, base=DatabaseTask, db_max_retries=2, name="tests.celery.always_deadlocks")
def always_deadlocks(self: DatabaseTask, title: str) -> None:
    session = self.db_session.session
    _record(self, session)
    insert(session, title)
    raise driver_error(sa_exc.OperationalError, "40P01")


@app.task(bind=True, base=DatabaseTask, db_retry_transient=False, name="tests.celery.no_db_retries")
def no_db_retries(self: DatabaseTask, title: str) -> None:
    _record(self, self.db_session.session)
    raise DeadlockError("injected", pool="main")


@app.task(bind=True, base=DatabaseTask, db_pool="other", name="tests.celery.other_pool_write")
def other_pool_write(self: DatabaseTask, title: str) -> str:
    session = self.db_session.session
    _record(self, session)["main_helper"] = get_celery_db_session("main")
    insert(session, title)
    return title


@app.task(bind=True, base=DatabaseTask, name="tests.celery.savepoints")
def savepoints(self: DatabaseTask) -> None:
    call_session = self.db_session.session
    with self.db_session.session_scope() as session:
        CALLS.append({"same": session is call_session, "nested": session.in_nested_transaction()})
        insert(session, "kept-in-savepoint")
    with pytest.raises(ValueError), self.db_session.session_scope() as session:
        insert(session, "rolled-back-savepoint")
        raise ValueError("inner")
    insert(call_session, "after-savepoints")


@app.task(bind=True, base=DatabaseTask, name="tests.celery.lazy")
def lazy(self: DatabaseTask) -> str:
    """Never touches the database: the call must check out nothing."""
    return "done"


@app.task(base=DatabaseTask, name="tests.celery.target")
def target(*args: Any, **kwargs: Any) -> None:
    """The task that on_commit tests publish (never run here)."""


@app.task(bind=True, base=DatabaseTask, name="tests.celery.publishes")
def publishes(self: DatabaseTask, title: str) -> None:
    """Writes, enqueues `target(title)` on commit, then runs the next action."""
    session = self.db_session.session
    _record(self, session)
    insert(session, title)
    target.delay_on_commit(title)
    action = ACTIONS.pop(0) if ACTIONS else None
    if action is not None:
        action()


@app.task(bind=True, base=DatabaseTask, name="tests.celery.publishes_first")
def publishes_first(self: DatabaseTask, title: str, write: bool) -> None:
    """Enqueues `target(title)` on commit before touching the database (if ever)."""
    target.delay_on_commit(title)
    CALLS.append({"checked_out_after_enqueue": checked_out()})
    if write:
        insert(self.db_session.session, title)
    action = ACTIONS.pop(0) if ACTIONS else None
    if action is not None:
        action()


@app.task(bind=True, base=DatabaseTask, name="tests.celery.with_retry_helper")
def with_retry_helper(self: DatabaseTask, fail_after: bool) -> None:
    """Writes through execute_with_retry, in attempts of their own, then in the call's transaction.

    (The call writes last: SQLite's shared-cache test database admits one writer at a time.)
    """

    def attempt() -> str:
        number = len(CALLS)
        with pytest.raises(SessionError):
            current_session()  # the call's session is not reachable from an attempt
        with self.db_session.session_scope() as session:
            CALLS.append({"session": session, "nested": session.in_nested_transaction()})
            insert(session, f"attempt-{number}")
            action = ACTIONS.pop(0) if ACTIONS else None
            if action is not None:
                action()
        return f"attempt-{number}"

    CALLS.append({"result": self.db_session.execute_with_retry(attempt, base_delay=0.001)})
    insert(self.db_session.session, "call-write")
    if fail_after:
        raise ValueError("the call fails after the helper committed")


@app.task(bind=True, base=DatabaseTask, name="tests.celery.helper_then_transient")
def helper_then_transient(self: DatabaseTask) -> None:
    """Commits through execute_with_retry; then the call's transaction fails transiently, once."""
    run = int(self.request.retries or 0)

    def attempt() -> None:
        with self.db_session.session_scope() as session:
            insert(session, f"helper-run-{run}")

    self.db_session.execute_with_retry(attempt, base_delay=0.001)
    insert(self.db_session.session, f"call-run-{run}")
    if run == 0:
        raise DeadlockError("the call's transaction fails after the helper committed", pool="main")


class SendSMSTask(DatabaseTask):
    """The seeds' class-based task, with run()."""

    name = "tests.celery.send_sms"

    def run(self, user_id: int, message: str) -> str:
        with self.db_session.session_scope() as session:
            CALLS.append({"session": session, "call_session": self.db_session.session})
            insert(session, f"sms-{user_id}", message)
        return "sent"


send_sms = app.register_task(SendSMSTask())


def task(fn: Any) -> Any:
    """This app's instance of a task (shared tasks are bound to every app)."""
    return app.tasks[fn.name]


def raises(exc: BaseException) -> Callable[[], None]:
    def action() -> None:
        raise exc

    return action


def assert_closed() -> None:
    """Every session of this test was closed and every connection returned."""
    assert checked_out("main") == 0
    assert checked_out("other") == 0
    assert state.sessions.active_sessions == 0
    for call in CALLS:
        session = call.get("session")
        if session is not None:
            assert not session.in_transaction()


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


@app.task(
    bind=True,
    base=DatabaseTask,
    autoretry_for=(KeyError,),
    max_retries=3,
    db_max_retries=1,
    name="tests.celery.autoretrying",
)
def autoretrying(self: DatabaseTask, title: str) -> None:
    _record(self)
    action = ACTIONS.pop(0) if ACTIONS else None
    if action is not None:
        action()


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


# -- transient errors: retried through Celery -------------------------------------------------


TRANSIENT_ERRORS = {
    "DeadlockError": lambda: DeadlockError("injected deadlock", pool="main"),
    "SerializationError": lambda: SerializationError("injected", pool="main"),
    "driver-40P01": lambda: driver_error(sa_exc.OperationalError, "40P01"),
    "driver-40001": lambda: driver_error(sa_exc.OperationalError, "40001"),
    "driver-57P01": lambda: driver_error(sa_exc.OperationalError, "57P01"),
}


@pytest.fixture
def retry_spy(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Records each Task.retry() call's keyword arguments and get_retry_delay's answers."""
    from mingus_sessions import celery as celery_module

    calls: list[dict[str, Any]] = []
    real_delay = celery_module.get_retry_delay

    def spy_delay(exc: BaseException, attempt: int) -> float:
        delay = real_delay(exc, attempt)
        calls.append({"attempt": attempt, "delay": delay, "exc": exc})
        return delay

    monkeypatch.setattr(celery_module, "get_retry_delay", spy_delay)
    for fn in (scripted, always_deadlocks, publishes, publishes_first):
        cls = type(task(fn))
        real_retry = cls.retry

        def spy_retry(self: Any, *args: Any, _real: Any = real_retry, **kwargs: Any) -> Any:
            calls[-1]["countdown"] = kwargs.get("countdown")
            calls[-1]["max_retries"] = kwargs.get("max_retries")
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(cls, "retry", spy_retry)
    return calls


@pytest.mark.parametrize("make_error", TRANSIENT_ERRORS.values(), ids=TRANSIENT_ERRORS.keys())
@DB
def test_transient_error_is_retried_by_celery_and_committed_once(
    make_error: Callable[[], BaseException], retry_spy: list[dict[str, Any]]
) -> None:
    ACTIONS.extend([raises(make_error()), raises(make_error()), None])
    result = scripted.apply(args=("effect",))
    assert result.successful(), result.traceback
    assert [call["retries"] for call in CALLS] == [0, 1, 2]
    # Each attempt wrote the same unique title: the failed ones were rolled back.
    assert titles() == ["effect"]
    assert state.sessions.retries == 2
    assert len({id(call["session"]) for call in CALLS}) == 3
    # The countdown handed to Celery is get_retry_delay's, for attempts 0 and 1.
    assert [spy["attempt"] for spy in retry_spy] == [0, 1]
    for spy in retry_spy:
        assert spy["countdown"] == spy["delay"]
        assert 0.0 <= spy["delay"] <= 0.1 * 2 ** spy["attempt"]  # RETRY defaults, jittered
        assert isinstance(spy["exc"], DeadlockError | SerializationError | DatabaseUnavailableError)
    assert_closed()


@DB
def test_db_max_retries_is_respected_then_the_error_is_raised(
    retry_spy: list[dict[str, Any]],
) -> None:
    result = always_deadlocks.apply(args=("never",))
    assert result.failed()
    assert isinstance(result.result, DeadlockError)
    assert isinstance(result.result.__cause__, sa_exc.OperationalError)
    assert [call["retries"] for call in CALLS] == [0, 1, 2]
    assert state.sessions.retries == 2
    assert [spy.get("max_retries") for spy in retry_spy] == [2, 2]
    assert titles() == []
    assert_closed()
    # With propagation (task_eager_propagates / throw=True) Celery raises its Retry
    # instead of running the retry; it carries the translated error and the countdown.
    with pytest.raises(Retry) as raised:
        always_deadlocks.apply(args=("never",), throw=True)
    assert isinstance(raised.value.exc, DeadlockError)
    assert raised.value.when == retry_spy[-1]["countdown"]
    assert titles() == []
    assert_closed()


@DB
def test_max_retries_default_to_the_retry_setting(settings: Any) -> None:
    settings.MINGUS_SESSIONS = {
        **settings.MINGUS_SESSIONS,
        "RETRY": {"MAX_RETRIES": 1, "BASE_DELAY": 0.01, "MAX_DELAY": 0.05, "JITTER": True},
    }
    ACTIONS.extend([raises(DeadlockError("x", pool="main"))] * 5)
    result = scripted.apply(args=("limited",))
    assert result.failed()
    assert [call["retries"] for call in CALLS] == [0, 1]
    assert state.sessions.retries == 1
    assert_closed()


def open_breaker(pool: str) -> None:
    """Count enough connection failures against ``pool``'s breaker to open it."""
    from mingus_sessions import get_circuit_breaker

    breaker = get_circuit_breaker(pool)
    for _ in range(breaker.failure_threshold):
        breaker.record_failure()
    assert breaker.state == "open"


@DB
def test_open_circuit_breaker_is_retried_after_its_recovery(
    retry_spy: list[dict[str, Any]],
) -> None:
    """CircuitOpenError: not worth an early retry, but worth one once the breaker recovers."""
    open_breaker("main")
    result = scripted.apply(args=("breaker",))
    assert result.failed()
    assert isinstance(result.result, CircuitOpenError)
    assert CALLS == []  # every attempt failed fast, before the task body wrote anything
    assert [spy["attempt"] for spy in retry_spy] == [0, 1, 2]  # RETRY["MAX_RETRIES"]
    for spy in retry_spy:
        # The countdown waits for the half-open trial (RECOVERY_TIMEOUT is 60 s).
        assert spy["countdown"] >= 55.0
        assert spy["delay"] <= 0.1 * 2 ** spy["attempt"]
    assert state.sessions.retries == 3
    assert_closed()


@DB_OTHER
def test_open_breaker_of_another_pool_is_retried_after_that_breakers_recovery(
    retry_spy: list[dict[str, Any]],
) -> None:
    """A task on its own pool whose scope of another pool meets that pool's open breaker."""
    from mingus_sessions import get_circuit_breaker

    open_breaker("other")
    assert get_circuit_breaker("main").state == "closed"

    def use_the_other_pool() -> None:
        with session_scope("other"):
            pass

    ACTIONS.extend([use_the_other_pool] * 4)
    result = scripted.apply(args=("other-pool-down",))
    assert result.failed()
    assert isinstance(result.result, CircuitOpenError)
    assert result.result.pool == "other"
    assert [spy["attempt"] for spy in retry_spy] == [0, 1, 2]
    for spy in retry_spy:
        assert spy["countdown"] >= 55.0  # the other pool's RECOVERY_TIMEOUT is 60 s
    assert titles() == []


@DB
def test_integrity_error_is_never_retried() -> None:
    assert scripted.apply(args=("taken",)).successful()
    result = scripted.apply(args=("taken",))
    assert result.failed()
    assert isinstance(result.result, sa_exc.IntegrityError)
    assert [call["retries"] for call in CALLS] == [0, 0]
    assert state.sessions.retries == 0
    assert titles() == ["taken"]
    assert_closed()


@pytest.mark.parametrize(
    "error",
    [
        ValueError("not a database error"),
        AuthenticationError("bad password", pool="main"),
        driver_error(sa_exc.ProgrammingError, "42P01"),
        driver_error(sa_exc.DataError, "22001"),
    ],
    ids=["ValueError", "AuthenticationError", "ProgrammingError", "DataError"],
)
@DB
def test_non_transient_errors_fail_at_once(error: BaseException) -> None:
    ACTIONS.append(raises(error))
    result = scripted.apply(args=("x",))
    assert result.failed()
    assert len(CALLS) == 1
    assert state.sessions.retries == 0
    assert_closed()


@DB
def test_db_retry_transient_false_fails_at_once() -> None:
    result = no_db_retries.apply(args=("x",))
    assert result.failed()
    assert isinstance(result.result, DeadlockError)
    assert len(CALLS) == 1
    assert state.sessions.retries == 0
    assert_closed()


@DB
def test_retry_leaves_no_session_open_between_attempts(retry_spy: list[dict[str, Any]]) -> None:
    """Between attempts nothing is checked out: each attempt opens its own session."""
    seen: list[int] = []
    ACTIONS.extend(
        [
            raises(DeadlockError("x", pool="main")),
            lambda: seen.append(checked_out()),
        ]
    )
    assert scripted.apply(args=("retried",)).successful()
    assert seen == [1]  # only the second attempt's own connection
    assert_closed()


# -- the retry policy --------------------------------------------------------------------------


def test_get_retry_delay_is_exponential_and_capped(settings: Any) -> None:
    settings.MINGUS_SESSIONS = {
        **settings.MINGUS_SESSIONS,
        "RETRY": {"MAX_RETRIES": 3, "BASE_DELAY": 0.5, "MAX_DELAY": 3.0, "JITTER": False},
    }
    error = DeadlockError("x")
    assert [get_retry_delay(error, attempt) for attempt in range(6)] == [
        0.5,
        1.0,
        2.0,
        3.0,
        3.0,
        3.0,
    ]
    assert get_retry_delay(error, 500) == 3.0  # no overflow for absurd attempts


def test_get_retry_delay_jitter_stays_within_bounds(settings: Any) -> None:
    settings.MINGUS_SESSIONS = {
        **settings.MINGUS_SESSIONS,
        "RETRY": {"MAX_RETRIES": 3, "BASE_DELAY": 0.5, "MAX_DELAY": 3.0, "JITTER": True},
    }
    error = DeadlockError("x")
    for attempt, ceiling in [(0, 0.5), (1, 1.0), (2, 2.0), (3, 3.0), (10, 3.0)]:
        delays = [get_retry_delay(error, attempt) for _ in range(200)]
        assert all(0.0 <= delay <= ceiling for delay in delays)
        assert len(set(delays)) > 100  # jittered, not a constant
        assert max(delays) > ceiling / 2


def test_get_retry_delay_defaults() -> None:
    """RETRY defaults: base 0.1 s, cap 30 s, jitter on."""
    assert all(0.0 <= get_retry_delay(DeadlockError("x"), 0) <= 0.1 for _ in range(50))
    assert all(0.0 <= get_retry_delay(DeadlockError("x"), 20) <= 30.0 for _ in range(50))


CLASSIFIED = [
    (DeadlockError("x"), "deadlock"),
    (driver_error(sa_exc.OperationalError, "40P01"), "deadlock"),
    (SerializationError("x"), "serialization"),
    (driver_error(sa_exc.OperationalError, "40001"), "serialization"),
    (LockTimeoutError("x"), "lock_timeout"),
    (driver_error(sa_exc.OperationalError, "55P03"), "lock_timeout"),
    (PoolExhaustedError("x"), "pool_exhausted"),
    (sa_exc.TimeoutError("QueuePool limit reached"), "pool_exhausted"),
    (CircuitOpenError("x"), "circuit_open"),
    (AuthenticationError("x"), "authentication"),
    (driver_error(sa_exc.OperationalError, "28P01"), "authentication"),
    (DatabaseUnavailableError("x"), "connection"),
    (ConnectionTimeoutError("x"), "connection"),
    (driver_error(sa_exc.OperationalError, "57P01"), "connection"),
    (driver_error(sa_exc.IntegrityError, "23505"), "integrity"),
    (driver_error(sa_exc.DataError, "22001"), "data"),
    (driver_error(sa_exc.ProgrammingError, "42P01"), "programming"),
    (driver_error(sa_exc.OperationalError, "XX000"), "database"),
    (TransactionError("x"), "database"),
    (SessionError("x"), "database"),
    (AfterCommitError("x"), "database"),
    (ValueError("x"), "other"),
    (KeyboardInterrupt(), "other"),
]


@pytest.mark.parametrize(("error", "name"), CLASSIFIED, ids=[n for _, n in CLASSIFIED])
def test_classify_error(error: BaseException, name: str) -> None:
    assert classify_error(error) == name


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (DeadlockError("x"), True),
        (SerializationError("x"), True),
        (LockTimeoutError("x"), True),
        (PoolExhaustedError("x"), True),
        (DatabaseUnavailableError("x"), True),
        (driver_error(sa_exc.OperationalError, "40P01"), True),
        (driver_error(sa_exc.OperationalError, "57P01"), True),
        (driver_error(sa_exc.IntegrityError, "23505"), False),
        (driver_error(sa_exc.ProgrammingError, "42P01"), False),
        (AuthenticationError("x"), False),
        (ConfigurationError("x"), False),
        (CircuitOpenError("x"), False),
        (ValueError("x"), False),
        (SoftTimeLimitExceeded(), False),
        (AfterCommitError("x"), False),
    ],
)
def test_should_retry(error: BaseException, expected: bool) -> None:
    assert should_retry(error) is expected


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


# -- on_commit and delay_on_commit (C4) --------------------------------------------------------


@DB
def test_on_commit_outside_any_scope_runs_at_once() -> None:
    ran: list[int] = []
    on_commit(lambda: ran.append(1))
    assert ran == [1]
    target.delay_on_commit("now")
    assert published() == [(target.name, ("now",), {})]


@DB
def test_delay_on_commit_publishes_nothing_when_the_scope_rolls_back() -> None:
    ran: list[int] = []
    with pytest.raises(ValueError), session_scope() as session:
        insert(session, "rolled-back")
        target.delay_on_commit("never")
        on_commit(lambda: ran.append(1))
        assert published() == []
        raise ValueError("roll back")
    assert published() == []
    assert ran == []
    assert titles() == []


@DB
def test_delay_on_commit_publishes_once_after_the_commit() -> None:
    seen_at_publish: list[list[str]] = []

    with session_scope() as session:
        insert(session, "committed")
        target.delay_on_commit("once", key="value")
        target.apply_async_on_commit(("with-options",), {"a": 1}, countdown=30)
        # The callback sees the committed row from another connection: it runs after commit.
        on_commit(lambda: seen_at_publish.append(titles_from_a_raw_connection()))
        assert published() == []
    messages = published()
    assert messages == [
        (target.name, ("once",), {"key": "value"}),
        (target.name, ("with-options",), {"a": 1}),
    ]
    assert seen_at_publish == [["committed"]]
    assert published() == []  # exactly once
    assert_closed()


@DB
def test_delay_on_commit_inside_a_rolled_back_savepoint_is_dropped() -> None:
    with session_scope() as session:
        target.delay_on_commit("outer")
        with pytest.raises(ValueError), session_scope() as inner:
            insert(inner, "inner")
            target.delay_on_commit("inner-dropped")
            raise ValueError("inner fails")
        with session_scope():
            target.delay_on_commit("released-savepoint")
        with pytest.raises(KeyError), session_scope():
            with session_scope():
                target.delay_on_commit("released-inside-a-rolled-back-one")
            raise KeyError("outer savepoint fails")
        target.delay_on_commit("after")
        insert(session, "outer")
    assert [args for _, args, _ in published()] == [
        ("outer",),
        ("released-savepoint",),
        ("after",),
    ]
    assert titles() == ["outer"]


@DB
def test_on_commit_inside_sqlalchemys_own_savepoint_follows_it() -> None:
    """A SAVEPOINT begun with ``session.begin_nested()`` drops its callbacks when it rolls back.

    Whoever rolls it back: the context manager on an exception, the code by
    hand, an outer savepoint (SQLAlchemy's or a scope's); a released one hands
    its callbacks to the outer transaction.
    """
    ran: list[str] = []
    with session_scope() as session:
        insert(session, "outer")
        with pytest.raises(ValueError), session.begin_nested():
            insert(session, "inner")
            target.delay_on_commit("rolled-back-by-the-context-manager")
            on_commit(lambda: ran.append("rolled-back"))
            raise ValueError("inner fails")
        savepoint = session.begin_nested()
        target.delay_on_commit("rolled-back-by-hand")
        savepoint.rollback()
        with session.begin_nested():
            target.delay_on_commit("released")
        outer_savepoint = session.begin_nested()
        with session.begin_nested():
            target.delay_on_commit("released-inside-a-rolled-back-one")
        outer_savepoint.rollback()
        with session_scope(), pytest.raises(ValueError), session.begin_nested():
            target.delay_on_commit("rolled-back-inside-a-released-scope")
            raise ValueError("inner fails")
        with pytest.raises(KeyError), session_scope():
            with session.begin_nested():
                target.delay_on_commit("released-inside-a-rolled-back-scope")
            raise KeyError("the scope fails")
        target.delay_on_commit("after")
    assert [args for _, args, _ in published()] == [("released",), ("after",)]
    assert ran == []
    assert titles() == ["outer"]
    assert_closed()


@DB
def test_on_commit_inside_a_savepoint_whose_flush_failed_is_dropped() -> None:
    """A failed flush rolls the savepoint back at the database: its callbacks go with it."""
    with session_scope() as session:
        insert(session, "taken")
        savepoint = session.begin_nested()
        target.delay_on_commit("in-the-failed-savepoint")
        session.add(NoteRow(title="taken"))
        with pytest.raises(sa_exc.IntegrityError):
            session.flush()
        savepoint.rollback()
        target.delay_on_commit("after")
    assert [args for _, args, _ in published()] == [("after",)]
    assert titles() == ["taken"]


@DB
def test_delay_on_commit_of_a_task_called_inside_a_joined_scope_waits_for_django() -> None:
    """A task call inside a joined scope is a savepoint on it: its publish waits for Django.

    Whether the call wrote before publishing, after, or not at all; a call that
    fails publishes nothing.
    """
    with transaction.atomic():
        with session_scope(join_django=True):
            assert publishes.apply(args=("written-first",)).successful()
            assert publishes_first.apply(args=("published-first", True)).successful()
            assert publishes_first.apply(args=("never-written", False)).successful()
            ACTIONS.append(raises(ValueError("fails")))
            assert publishes.apply(args=("failed",)).failed()
        assert published() == []
    assert sorted(args for _, args, _ in published()) == [
        ("never-written",),
        ("published-first",),
        ("written-first",),
    ]
    assert titles() == ["published-first", "written-first"]


@DB
def test_delay_on_commit_follows_djangos_transaction_in_a_joined_scope() -> None:
    with transaction.atomic():
        with session_scope(join_django=True) as session:
            insert(session, "joined")
            target.delay_on_commit("joined")
        assert published() == []  # Django has not committed yet
    assert published() == [(target.name, ("joined",), {})]
    with pytest.raises(ValueError), transaction.atomic():
        with session_scope(join_django=True) as session:
            insert(session, "joined-rolled-back")
            target.delay_on_commit("never")
        raise ValueError("roll the atomic block back")
    assert published() == []
    assert titles() == ["joined"]


@DB
def test_delay_on_commit_inside_a_task_call() -> None:
    """Inside a DatabaseTask call the publish waits for the call's commit."""
    assert publishes.apply(args=("ok",)).successful()
    assert published() == [(target.name, ("ok",), {})]
    ACTIONS.append(raises(ValueError("fails")))
    assert publishes.apply(args=("fails",)).failed()
    assert published() == []
    assert titles() == ["ok"]


@DB
def test_delay_on_commit_before_a_calls_own_commit_publishes_when_the_call_then_fails() -> None:
    """The call committed its write itself: the publish that waited for it is not lost."""

    def commit_then_fail() -> None:
        current_session().commit()
        raise ValueError("fails after its own commit")

    ACTIONS.append(commit_then_fail)
    assert publishes.apply(args=("committed-by-the-call",)).failed()
    assert published() == [(target.name, ("committed-by-the-call",), {})]
    assert titles() == ["committed-by-the-call"]
    assert_closed()


@DB
def test_delay_on_commit_before_the_call_touches_the_database_opens_nothing() -> None:
    """Enqueued before the lazy session opens: no checkout for it, published after success."""
    checkouts: list[int] = []
    engine = get_engine()

    def on_checkout(*args: Any) -> None:
        checkouts.append(1)

    event.listen(engine, "checkout", on_checkout)
    try:
        assert publishes_first.apply(args=("no-db", False)).successful()
    finally:
        event.remove(engine, "checkout", on_checkout)
    assert checkouts == []
    assert CALLS == [{"checked_out_after_enqueue": 0}]
    assert published() == [(target.name, ("no-db",), {})]
    # A call that fails without touching the database publishes nothing.
    ACTIONS.append(raises(ValueError("fails")))
    assert publishes_first.apply(args=("no-db-failed", False)).failed()
    assert published() == []


@DB
def test_delay_on_commit_before_the_session_opens_follows_its_transaction() -> None:
    """Enqueued before the first write: it waits for that transaction, and dies with it."""
    assert publishes_first.apply(args=("written", True)).successful()
    assert published() == [(target.name, ("written",), {})]
    ACTIONS.append(raises(ValueError("roll back the write")))
    assert publishes_first.apply(args=("rolled-back", True)).failed()
    assert published() == []
    assert titles() == ["written"]
    assert_closed()


@DB
def test_delay_on_commit_in_a_retried_call_publishes_once(
    retry_spy: list[dict[str, Any]],
) -> None:
    ACTIONS.extend([raises(SerializationError("x", pool="main")), None])
    assert publishes.apply(args=("retried",)).successful()
    assert [call["retries"] for call in CALLS] == [0, 1]
    assert published() == [(target.name, ("retried",), {})]
    assert titles() == ["retried"]
    assert_closed()


@DB
def test_eager_task_published_on_commit_runs_and_commits() -> None:
    """With task_always_eager, delay_on_commit runs the task after the commit, committing it."""
    app.conf.update(task_always_eager=True, task_eager_propagates=True)
    try:
        with session_scope() as session:
            insert(session, "before-eager")
            scripted.delay_on_commit("eager-after-commit")
    finally:
        app.conf.update(task_always_eager=False, task_eager_propagates=False)
    try:
        assert len(CALLS) == 1
        assert CALLS[0]["session"] is not session
        assert_closed()
        assert titles() == ["before-eager", "eager-after-commit"]
    finally:
        session.close()


# -- C5 in-process: the broker is down when the transaction commits ----------------------------


@pytest.fixture(params=["redis", "amqp"])
def down_app(request: pytest.FixtureRequest) -> Iterator[Celery]:
    """A Celery app whose broker is a closed local port; publishing fails fast."""
    port = closed_port()
    url = {
        "redis": f"redis://127.0.0.1:{port}/0",
        "amqp": f"amqp://guest:guest@127.0.0.1:{port}//",
    }[request.param]
    down = Celery(f"mingus-tests-down-{request.param}", set_as_current=False)
    down.conf.update(
        broker_url=url,
        broker_connection_retry=False,
        broker_connection_max_retries=0,
        broker_connection_timeout=1.0,
        broker_transport_options={"max_retries": 1, "interval_start": 0, "interval_step": 0.1},
        task_publish_retry_policy={"max_retries": 1, "interval_start": 0, "interval_step": 0.1},
    )
    yield down
    down.close()


@DB
def test_publish_failure_after_commit_is_raised_logged_and_the_commit_stands(
    down_app: Celery, caplog: pytest.LogCaptureFixture
) -> None:
    @down_app.task(base=DatabaseTask, name="tests.celery.down_target", shared=False)
    def down_target(title: str) -> None:  # pragma: no cover - never runs
        pass

    later: list[int] = []
    started = time.monotonic()
    with (
        caplog.at_level(logging.ERROR, logger="mingus_sessions"),
        pytest.raises(AfterCommitError) as raised,
        session_scope() as session,
    ):
        insert(session, "committed-anyway")
        down_target.delay_on_commit("lost?")
        on_commit(lambda: later.append(1))
    assert time.monotonic() - started < 3.0
    assert isinstance(raised.value.__cause__, KombuOperationalError)  # what the broker raised
    assert "publishing task tests.celery.down_target" in str(raised.value)
    assert not should_retry(raised.value)  # retrying would repeat the committed work
    assert titles() == ["committed-anyway"]  # the transaction stays committed
    assert later == [1]  # the other callbacks still ran
    errors = [r for r in caplog.records if r.name == "mingus_sessions" and r.levelno >= 40]
    assert len(errors) == 1
    message = errors[0].getMessage()
    assert "publishing task tests.celery.down_target" in message
    assert "committed" in message
    assert errors[0].exc_info is not None
    assert_closed()


@DB
def test_publish_failure_after_a_task_call_commits_fails_the_task(
    down_app: Celery, caplog: pytest.LogCaptureFixture
) -> None:
    """Inside a task call: the call's work is committed, the task fails (AfterCommitError)."""

    @down_app.task(base=DatabaseTask, name="tests.celery.down_target2", shared=False)
    def down_target(title: str) -> None:  # pragma: no cover - never runs
        pass

    def enqueue() -> None:
        down_target.delay_on_commit("x")

    ACTIONS.append(enqueue)
    with caplog.at_level(logging.ERROR, logger="mingus_sessions"):
        result = scripted.apply(args=("task-committed",))
    assert result.failed()
    assert isinstance(result.result, AfterCommitError)
    assert isinstance(result.result.__cause__, KombuOperationalError)
    assert len(CALLS) == 1  # not retried: the call's work is committed
    assert titles() == ["task-committed"]
    assert any(
        "publishing task tests.celery.down_target2" in r.getMessage()
        for r in caplog.records
        if r.name == "mingus_sessions" and r.levelno >= 40
    )
    assert_closed()
