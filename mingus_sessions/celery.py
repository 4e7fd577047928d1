"""Celery integration: ``DatabaseTask`` and friends.

Each call of a :class:`DatabaseTask` is a scope of the task's pool
(``CELERY_POOL`` unless the task sets ``db_pool``), opened lazily like a
request's: ``self.db_session.session`` and ``current_session()`` give its
session, and ``session_scope()`` inside the task is a SAVEPOINT on it. The
session commits when the call returns, rolls back when it raises, and is closed
either way. The cleanup sits in ``__call__``, around ``run()``, because Celery
skips ``after_return`` when a task retries; nothing is kept on the task
instance, which one process shares between all its calls.

A transient database failure (:func:`~mingus_sessions.is_transient`) is retried
through Celery's own ``retry()``: the whole call runs again later, in a fresh
transaction, after an exponential, capped, jittered countdown, up to
``db_max_retries`` times (``RETRY["MAX_RETRIES"]`` by default). Other failures
are raised at once. What the call committed in transactions of its own
(``execute_with_retry()``, independent scopes) is done again by the retry, so
such work must be idempotent.

Each process that runs tasks joins the fleet as it starts (Celery's
``worker_process_init``: a prefork child after its fork, or the solo pool's
worker), so ``pool_status`` and the admin list an idle worker too; with other
pools (threads, gevent) the first ``DatabaseTask`` call starts the sampler.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

from celery import Task
from celery._state import _task_stack
from celery.signals import worker_process_init
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session

from . import conf, monitor
from ._core.errors import (
    AuthenticationError,
    CircuitOpenError,
    DatabaseConnectionError,
    DeadlockError,
    LockTimeoutError,
    PoolExhaustedError,
    SerializationError,
    SessionError,
)
from ._core.frames import enter, leave
from ._core.retry import backoff_delay
from ._core.state import state
from ._core.translate import classify, is_transient
from .after_commit import on_commit
from .breakers import get_circuit_breaker
from .retry import execute_with_retry
from .sessions import LazyScope, _session_decorator, session_scope

__all__ = [
    "DatabaseTask",
    "TaskDatabase",
    "TransactionManager",
    "classify_error",
    "get_celery_db_session",
    "get_retry_delay",
    "should_retry",
    "with_celery_db_session",
]

T = TypeVar("T")

#: The running DatabaseTask call's helper: per call, as a context variable's
#: value is (never on the task instance, which every call in a process shares).
_call: ContextVar[TaskDatabase | None] = ContextVar("mingus_sessions_task_call", default=None)


# -- the fleet ------------------------------------------------------------------------------


def _join_the_fleet(**_: Any) -> None:
    """Start this task process's sampler as it starts (after the fork, never before it)."""
    monitor.ensure_monitoring("worker")


worker_process_init.connect(_join_the_fleet, weak=False)


# -- error policy ---------------------------------------------------------------------------


def classify_error(exc: BaseException) -> str:
    """A short name for the kind of failure, for logs and decisions.

    One of ``"deadlock"``, ``"serialization"``, ``"lock_timeout"``,
    ``"pool_exhausted"``, ``"circuit_open"``, ``"authentication"``,
    ``"connection"``, ``"integrity"``, ``"data"``, ``"programming"``,
    ``"database"`` (another database error) or ``"other"``.
    """
    found = classify(exc)
    if found is not None:
        for cls, name in (
            (DeadlockError, "deadlock"),
            (SerializationError, "serialization"),
            (LockTimeoutError, "lock_timeout"),
            (PoolExhaustedError, "pool_exhausted"),
            (CircuitOpenError, "circuit_open"),
            (AuthenticationError, "authentication"),
            (DatabaseConnectionError, "connection"),
        ):
            if issubclass(found, cls):
                return name
    for error_type, name in (
        (sa_exc.IntegrityError, "integrity"),
        (sa_exc.DataError, "data"),
        (sa_exc.ProgrammingError, "programming"),
        (sa_exc.SQLAlchemyError, "database"),
        (SessionError, "database"),
    ):
        if isinstance(exc, error_type):
            return name
    return "other"


def should_retry(exc: BaseException) -> bool:
    """True when retrying the whole task may succeed (see :func:`~mingus_sessions.is_transient`)."""
    return is_transient(exc)


def get_retry_delay(exc: BaseException, attempt: int) -> float:
    """Seconds before retry number ``attempt`` (0 for the first), from ``RETRY``.

    Exponential and capped at ``MAX_DELAY``, with full jitter when ``JITTER``.
    ``exc`` is accepted for policies that depend on the failure; the built-in one
    does not.
    """
    retry = conf.get_config().retry
    return backoff_delay(
        attempt, base_delay=retry.base_delay, max_delay=retry.max_delay, jitter=retry.jitter
    )


# -- the helper behind self.db_session -------------------------------------------------------


class TaskDatabase:
    """Database access for one task call (``self.db_session``) or outside tasks."""

    def __init__(self, pool: str, scope: LazyScope | None = None) -> None:
        self.pool = pool
        self._scope = scope

    def __repr__(self) -> str:
        return f"<TaskDatabase pool={self.pool!r} in_call={self._scope is not None}>"

    @property
    def session(self) -> Session:
        """The task call's session: committed if the call succeeds, else rolled back."""
        if self._scope is None:
            raise SessionError(
                "self.db_session.session exists only during a DatabaseTask call; "
                "use get_celery_db_session().session_scope() elsewhere.",
                pool=self.pool,
            )
        return self._scope.session

    def session_scope(self, *, independent: bool = False) -> Any:
        """A scope of this pool: a SAVEPOINT on the call's session inside a task."""
        return session_scope(self.pool, independent=independent)

    def execute_with_retry(
        self,
        operation: Callable[[], T],
        *,
        max_retries: int | None = None,
        base_delay: float | None = None,
        max_delay: float | None = None,
    ) -> T:
        """Retry ``operation`` in-process, each attempt in its own transaction.

        The operation runs outside the call's transaction: a scope it opens is
        a transaction of its own, committed when that attempt succeeds, so a
        retry never works on a transaction a deadlock or disconnect has ended.
        That commit does not wait for the call: if Celery later retries the
        call, the operation runs and commits again, so it must be idempotent.
        """
        with _outside_scopes():
            return execute_with_retry(
                operation,
                pool=self.pool,
                max_retries=max_retries,
                base_delay=base_delay,
                max_delay=max_delay,
            )


@contextmanager
def _outside_scopes() -> Iterator[None]:
    token = enter(None)
    try:
        yield
    finally:
        leave(token)


def get_celery_db_session(pool: str | None = None) -> TaskDatabase:
    """``self.db_session`` of the running DatabaseTask call, or a helper on ``CELERY_POOL``."""
    current = _call.get()
    if current is not None and (pool is None or pool == current.pool):
        return current
    return TaskDatabase(pool or conf.get_config().celery_pool)


# -- the task base class ---------------------------------------------------------------------


class DatabaseTask(Task):  # type: ignore[misc]
    """A Celery task base class whose calls each run in one database transaction.

    Class attributes (also settable as task options, e.g.
    ``@app.task(base=DatabaseTask, db_pool="analytics", db_max_retries=5)``):

    - ``db_pool``: the pool (default ``CELERY_POOL``);
    - ``db_max_retries``: retries of transient failures (default ``RETRY["MAX_RETRIES"]``);
    - ``db_retry_transient``: set False to let transient failures fail the task.
    """

    abstract = True
    db_pool: str | None = None
    db_max_retries: int | None = None
    db_retry_transient: bool = True

    @property
    def db_session(self) -> TaskDatabase:
        """The database helper of the running call (``.session``, ``.session_scope()``)."""
        current = _call.get()
        if current is not None:
            return current
        return TaskDatabase(self.db_pool or conf.get_config().celery_pool)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not monitor.is_monitoring():
            # In the process that runs tasks (the prefork child), never before the fork.
            monitor.ensure_monitoring("worker")
        pool = self.db_pool or conf.get_config().celery_pool
        # Called directly (``task(...)``), not by a worker or apply(): give the
        # call the request context that Task.__call__ would have given it.
        direct = not self.request_stack.top
        if direct:
            _task_stack.push(self)
            self.push_request(args=args, kwargs=kwargs)
        try:
            return self._call_in_scope(pool, args, kwargs)
        finally:
            if direct:
                self.pop_request()
                _task_stack.pop()

    def _call_in_scope(self, pool: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        scope = LazyScope(pool)
        token = scope.activate()
        call_token = _call.set(TaskDatabase(pool, scope))
        failure: BaseException | None = None
        try:
            result = self.run(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - finished, then re-raised or retried
            failure = exc
        finally:
            # Leave the scope before finishing it: a retry that Celery runs
            # at once (eager mode) must start a transaction of its own.
            _call.reset(call_token)
            scope.deactivate(token)
        try:
            if failure is None:
                scope.finish(commit=True)
                return result
            scope.finish(commit=False, exc=failure)
        except BaseException as raised:  # noqa: BLE001 - the translated failure, re-raised
            return self._failed(raised, failure or raised)
        return self._failed(failure, failure)

    def _failed(self, error: BaseException, original: BaseException) -> Any:
        """Retry a transient database failure through Celery; re-raise anything else."""
        from celery.exceptions import Retry

        circuit_open = isinstance(error, CircuitOpenError)
        if (
            isinstance(original, Retry)
            or not self.db_retry_transient
            or not isinstance(original, Exception)
            or not (should_retry(error) or circuit_open)
        ):
            raise error
        max_retries = (
            conf.get_config().retry.max_retries
            if self.db_max_retries is None
            else self.db_max_retries
        )
        attempt = int(getattr(self.request, "retries", 0) or 0)
        if attempt >= max_retries:
            raise error
        countdown = get_retry_delay(error, attempt)
        if isinstance(error, CircuitOpenError):
            # The database is known to be down: come back once the breaker
            # lets a trial through, not sooner. That is the breaker that
            # refused the call, which may be another pool's than the task's.
            pool = error.pool or self.db_pool or conf.get_config().celery_pool
            countdown = max(countdown, get_circuit_breaker(pool).retry_in())
        state.sessions.retries += 1
        # retry(max_retries=...) stores the limit on the task instance, which
        # every call in this process shares; put Celery's own limit back.
        had_override = "override_max_retries" in vars(self)
        previous = vars(self).get("override_max_retries")
        try:
            raise self.retry(exc=error, countdown=countdown, max_retries=max_retries)
        finally:
            if had_override:
                self.override_max_retries = previous
            elif hasattr(self, "override_max_retries"):
                del self.override_max_retries

    def delay_on_commit(self, *args: Any, **kwargs: Any) -> None:
        """``delay()`` once the innermost active scope commits; never if it rolls back."""
        on_commit(_Publish(self, args, kwargs))

    def apply_async_on_commit(
        self,
        args: Sequence[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> None:
        """``apply_async()`` once the innermost active scope commits."""
        on_commit(_Publish(self, tuple(args or ()), dict(kwargs or {}), options))


class _Publish:
    """A deferred publish, described by the task's name in logs (never its arguments)."""

    def __init__(
        self,
        task: Task,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        options: dict[str, Any] | None = None,
    ) -> None:
        self.task = task
        self.args = args
        self.kwargs = kwargs
        self.options = options or {}
        self.description = f"publishing task {task.name}"

    def __call__(self) -> Any:
        return self.task.apply_async(self.args, self.kwargs, **self.options)


# -- decorators and the transaction manager --------------------------------------------------


def with_celery_db_session(pool: Any = None) -> Any:
    """Run the function in a scope of ``pool`` (``CELERY_POOL``), passing ``session=``.

    Usable bare (``@with_celery_db_session``) or called (``@with_celery_db_session("x")``).
    """
    return _session_decorator(pool, lambda chosen: chosen or conf.get_config().celery_pool)


class TransactionManager:
    """Named transactions whose counts, failures and durations are recorded by name."""

    def __init__(self, pool: str | None = None) -> None:
        self.pool = pool

    @contextmanager
    def named_transaction(self, name: str, pool: str | None = None) -> Iterator[Session]:
        """A ``session_scope`` recorded under ``name`` (see ``get_transaction_stats()``)."""
        started = time.perf_counter()
        failed = True
        try:
            with session_scope(self._pool(pool)) as session:
                yield session
            failed = False
        finally:
            state.transactions.record(name, time.perf_counter() - started, failed=failed)

    def batch_transaction(
        self,
        operations: Sequence[Callable[[Session], Any]],
        operation_name: str,
        pool: str | None = None,
    ) -> list[Any]:
        """Call every operation with one session in one transaction: all commit or none."""
        with self.named_transaction(operation_name, pool) as session:
            return [operation(session) for operation in operations]

    def _pool(self, pool: str | None) -> str:
        return pool or self.pool or conf.get_config().celery_pool
