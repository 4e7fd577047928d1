"""Process-wide session counters, kept by the scopes and the retry helper.

Plain Python. Increments are single bytecode-level ``+=`` on ints guarded by
the GIL; readers take a snapshot with :meth:`SessionStats.snapshot`.
"""

from __future__ import annotations

import threading

__all__ = ["SessionStats", "TransactionStats"]


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
        """Zero the counters; ``active_sessions`` is a live gauge and keeps its value."""
        self.active_sessions = getattr(self, "active_sessions", 0)
        self.total_sessions = 0
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


class TransactionStats:
    """Count, failures and durations of ``TransactionManager.named_transaction`` by name."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_name: dict[str, list[float]] = {}  # name -> [count, failures, total, max]

    def record(self, name: str, seconds: float, *, failed: bool) -> None:
        with self._lock:
            entry = self._by_name.setdefault(name, [0, 0, 0.0, 0.0])
            entry[0] += 1
            entry[1] += int(failed)
            entry[2] += seconds
            entry[3] = max(entry[3], seconds)

    def snapshot(self) -> dict[str, dict[str, float]]:
        """``{name: {"count", "failures", "avg_ms", "max_ms"}}``."""
        with self._lock:
            return {
                name: {
                    "count": int(count),
                    "failures": int(failures),
                    "avg_ms": total / count * 1000.0 if count else 0.0,
                    "max_ms": longest * 1000.0,
                }
                for name, (count, failures, total, longest) in self._by_name.items()
            }

    def reset(self) -> None:
        with self._lock:
            self._by_name.clear()

    def after_fork(self) -> None:
        # The lock may have been held by a parent thread the child does not have.
        self._lock = threading.Lock()
