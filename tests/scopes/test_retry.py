"""execute_with_retry and retry_on_transient around real scopes, with the RETRY settings as
defaults: what is retried, and what never is (R10: the connection lost at COMMIT)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import exc as sa_exc

import mingus_sessions
from mingus_sessions import (
    CommitOutcomeUnknownError,
    DeadlockError,
    execute_with_retry,
    get_engine,
    retry_on_transient,
    session_scope,
)
from mingus_sessions._core.state import state
from tests.helpers import NoteRow
from tests.scopes.helpers import checked_out, db, insert, titles


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


@pytest.mark.parametrize(
    ("keyword", "value"),
    [("base_delay", 1e12), ("max_delay", 1e12), ("base_delay", -1), ("max_delay", float("nan"))],
)
def test_execute_with_retry_refuses_a_delay_the_clock_cannot_sleep(
    keyword: str, value: float
) -> None:
    """execute_with_retry hands its delays to the policy unchanged: one out of range is refused
    before the first call, naming the argument, instead of an OverflowError replacing the
    failure being retried."""
    calls: list[int] = []
    with pytest.raises(ValueError, match=f"^{keyword} must be a number of seconds from 0 to 86400"):
        mingus_sessions.execute_with_retry(lambda: calls.append(1), **{keyword: value})  # type: ignore[arg-type]
    assert calls == []


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
