"""mingus_sessions: production-grade SQLAlchemy next to the Django ORM.

Only the names in ``__all__`` are public; every other module attribute and
every module not documented in ``docs/`` is private and may change.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._core.breaker import CircuitBreaker
    from ._core.errors import (
        AfterCommitError,
        AuthenticationError,
        CircuitOpenError,
        CommitOutcomeUnknownError,
        ConcurrentSessionUseError,
        ConfigurationError,
        ConnectionTimeoutError,
        DatabaseConnectionError,
        DatabaseUnavailableError,
        DeadlockError,
        LockTimeoutError,
        PoolExhaustedError,
        ReadOnlyTransactionError,
        SerializationError,
        SessionError,
        StatementTimeoutError,
        TransactionError,
        TransactionTimeoutError,
    )
    from ._core.translate import is_transient
    from .after_commit import on_commit
    from .asessions import (
        asession_scope,
        current_async_session,
        get_async_session,
        with_async_db_session,
    )
    from .async_engines import get_async_engine
    from .breakers import get_circuit_breaker
    from .engines import dispose_engines, get_engine
    from .replicas import last_commit_token
    from .retry import aexecute_with_retry, execute_with_retry, retry_on_transient
    from .sessions import current_session, get_session, pool_context, session_scope, with_db_session

#: Where each public name is defined. They are imported on first use (PEP 562),
#: so that importing a part of the package (the core, say) loads only that part.
_WHERE = {
    **dict.fromkeys(
        (
            "AfterCommitError",
            "AuthenticationError",
            "CircuitOpenError",
            "CommitOutcomeUnknownError",
            "ConcurrentSessionUseError",
            "ConfigurationError",
            "ConnectionTimeoutError",
            "DatabaseConnectionError",
            "DatabaseUnavailableError",
            "DeadlockError",
            "LockTimeoutError",
            "PoolExhaustedError",
            "ReadOnlyTransactionError",
            "SerializationError",
            "SessionError",
            "StatementTimeoutError",
            "TransactionError",
            "TransactionTimeoutError",
        ),
        "._core.errors",
    ),
    "CircuitBreaker": "._core.breaker",
    "is_transient": "._core.translate",
    "on_commit": ".after_commit",
    "get_circuit_breaker": ".breakers",
    "dispose_engines": ".engines",
    "get_engine": ".engines",
    "last_commit_token": ".replicas",
    "execute_with_retry": ".retry",
    "retry_on_transient": ".retry",
    "current_session": ".sessions",
    "get_session": ".sessions",
    "pool_context": ".sessions",
    "session_scope": ".sessions",
    "with_db_session": ".sessions",
    "asession_scope": ".asessions",
    "current_async_session": ".asessions",
    "get_async_session": ".asessions",
    "with_async_db_session": ".asessions",
    "aexecute_with_retry": ".retry",
    "get_async_engine": ".async_engines",
}

__version__ = "0.1.0.dev0"

__all__ = [
    "AfterCommitError",
    "AuthenticationError",
    "CircuitBreaker",
    "CircuitOpenError",
    "CommitOutcomeUnknownError",
    "ConcurrentSessionUseError",
    "ConfigurationError",
    "ConnectionTimeoutError",
    "DatabaseConnectionError",
    "DatabaseUnavailableError",
    "DeadlockError",
    "LockTimeoutError",
    "PoolExhaustedError",
    "ReadOnlyTransactionError",
    "SerializationError",
    "SessionError",
    "StatementTimeoutError",
    "TransactionError",
    "TransactionTimeoutError",
    "aexecute_with_retry",
    "asession_scope",
    "current_async_session",
    "current_session",
    "dispose_engines",
    "execute_with_retry",
    "get_async_engine",
    "get_async_session",
    "get_circuit_breaker",
    "get_engine",
    "get_session",
    "is_transient",
    "last_commit_token",
    "on_commit",
    "pool_context",
    "retry_on_transient",
    "session_scope",
    "with_async_db_session",
    "with_db_session",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # the next lookup finds it without this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
