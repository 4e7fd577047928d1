"""The in-process Celery app, its tasks and what the in-process tests share.

Tasks run through Celery's own tracer (``task.apply()``, eager ``delay()``), so
``__call__``, ``self.request`` and ``retry()`` behave as in a worker, without
one; tests/celery/test_workers.py does the same things with real workers.

Publishing is observed on Celery's in-memory broker (``memory://``, a queue per
run of the suite); each test drains it before and after (``_clean`` in
tests/celery/conftest.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from celery import Celery, shared_task
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.orm import Session

from mingus_sessions import DeadlockError, SessionError, current_session, get_engine, session_scope
from mingus_sessions._core.state import state
from mingus_sessions.celery import DatabaseTask, get_celery_db_session

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


# -- tasks ----------------------------------------------------------------------------------


#: Per call of `scripted`, in order: what to do after writing (None: return normally).
ACTIONS: list[Callable[[], Any] | None] = []


#: What each task call saw.
CALLS: list[dict[str, Any]] = []


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
