"""Process-wide session counters, kept by the scopes and the retry helper.

Plain Python. Increments are single bytecode-level ``+=`` on ints guarded by
the GIL; readers take a snapshot with :meth:`SessionStats.snapshot`.
"""

from __future__ import annotations

__all__ = ["SessionStats", "session_stats"]


class SessionStats:
    """Counts of sessions, transactions, savepoints and retries in this process."""

    __slots__ = (
        "active_sessions",
        "committed_transactions",
        "failed_sessions",
        "retries",
        "savepoints",
        "total_sessions",
        "transaction_rollbacks",
    )

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.total_sessions = 0
        self.active_sessions = 0
        self.committed_transactions = 0
        self.transaction_rollbacks = 0
        self.failed_sessions = 0
        self.savepoints = 0
        self.retries = 0

    def snapshot(self) -> dict[str, int]:
        return {
            name: getattr(self, name)
            for name in (
                "total_sessions",
                "active_sessions",
                "committed_transactions",
                "transaction_rollbacks",
                "failed_sessions",
                "savepoints",
                "retries",
            )
        }


session_stats = SessionStats()
