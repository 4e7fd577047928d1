"""Tasks published on commit, in-process: delay_on_commit (C4), and a broker down at the
commit (C5).

Publishing is observed on Celery's in-memory broker, or on an app whose broker
is a closed port (C5). on_commit's own rules, without Celery, are
tests/scopes/test_on_commit.py.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery
from django.db import transaction
from kombu.exceptions import OperationalError as KombuOperationalError
from sqlalchemy import exc as sa_exc
from sqlalchemy import text

from mingus_sessions import (
    AfterCommitError,
    SerializationError,
    current_session,
    get_engine,
    on_commit,
    session_scope,
)
from mingus_sessions.celery import DatabaseTask, should_retry
from tests.celery.inprocess import (
    ACTIONS,
    CALLS,
    DB,
    app,
    assert_closed,
    insert,
    published,
    publishes,
    publishes_first,
    raises,
    scripted,
    target,
    titles,
)
from tests.helpers import NoteRow, closed_port

#: The queue drained and the calls' records cleared around every test (tests/celery/conftest.py).
pytestmark = pytest.mark.usefixtures("_clean")


def titles_from_a_raw_connection() -> list[str]:
    """What another connection sees, read without any scope."""
    with get_engine().connect() as conn:
        return sorted(conn.execute(text("SELECT title FROM testapp_note")).scalars())


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

    from sqlalchemy import event

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
