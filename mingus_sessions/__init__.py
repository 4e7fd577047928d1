"""mingus_sessions: production-grade SQLAlchemy next to the Django ORM.

Only the names in ``__all__`` are public; every other module attribute and
every module not documented in ``docs/`` is private and may change.
"""

from __future__ import annotations

from ._core.breaker import CircuitBreaker
from ._core.errors import (
    AfterCommitError,
    AuthenticationError,
    CircuitOpenError,
    CommitOutcomeUnknownError,
    ConfigurationError,
    ConnectionTimeoutError,
    DatabaseConnectionError,
    DatabaseUnavailableError,
    DeadlockError,
    LockTimeoutError,
    PoolExhaustedError,
    SerializationError,
    SessionError,
    StatementTimeoutError,
    TransactionError,
    TransactionTimeoutError,
)
from ._core.translate import is_transient
from .after_commit import on_commit
from .breakers import get_circuit_breaker
from .engines import dispose_engines, get_engine
from .retry import execute_with_retry, retry_on_transient
from .sessions import current_session, get_session, pool_context, session_scope, with_db_session

__version__ = "0.1.0.dev0"

__all__ = [
    "AfterCommitError",
    "AuthenticationError",
    "CircuitBreaker",
    "CircuitOpenError",
    "CommitOutcomeUnknownError",
    "ConfigurationError",
    "ConnectionTimeoutError",
    "DatabaseConnectionError",
    "DatabaseUnavailableError",
    "DeadlockError",
    "LockTimeoutError",
    "PoolExhaustedError",
    "SerializationError",
    "SessionError",
    "StatementTimeoutError",
    "TransactionError",
    "TransactionTimeoutError",
    "current_session",
    "dispose_engines",
    "execute_with_retry",
    "get_circuit_breaker",
    "get_engine",
    "get_session",
    "is_transient",
    "on_commit",
    "pool_context",
    "retry_on_transient",
    "session_scope",
    "with_db_session",
]
