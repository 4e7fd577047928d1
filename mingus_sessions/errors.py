"""The error taxonomy (see ``docs/errors.md``); the classes live in the core."""

from __future__ import annotations

from ._core.errors import (
    AfterCommitError,
    AuthenticationError,
    CircuitOpenError,
    CommitOutcomeUnknownError,
    ConcurrentSessionUseError,
    ConfigurationError,
    ConnectionError,
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

__all__ = [
    "AfterCommitError",
    "AuthenticationError",
    "CircuitOpenError",
    "CommitOutcomeUnknownError",
    "ConcurrentSessionUseError",
    "ConfigurationError",
    "ConnectionError",
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
]
