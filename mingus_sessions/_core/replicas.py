"""Read replicas: WAL positions, what the samples say of each replica, and the choice of one.

Plain Python. A read-only scope on a pool with ``REPLICAS`` runs on a replica
that is reachable, within ``MAX_REPLICA_LAG`` and has replayed the last commit
this context made on the primary; the choice reads only what is in memory (the
sampler's last look at each replica, this context's commit position), so it
costs no round trip. Positions are PostgreSQL WAL positions (LSNs), kept as
integers and carried between processes as PostgreSQL writes them (``16/B374D848``).
"""

from __future__ import annotations

import itertools
import logging
import re
import time
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from sqlalchemy import Engine, event

from .breaker import CircuitBreaker
from .translate import summary

__all__ = [
    "Positions",
    "ReplicaRouter",
    "ReplicaStatus",
    "adopt_positions",
    "commit_position",
    "context_positions",
    "forget_positions",
    "format_lsn",
    "parse_lsn",
    "pin_to_primary",
    "pinned_to_primary",
    "read_only_engine",
    "remember_commit",
    "track_commit_positions",
]

logger = logging.getLogger("mingus_sessions")

INSERT_POSITION_SQL = "SELECT pg_current_wal_insert_lsn()::text"
#: Connection info key: this checkout committed a transaction that may have written.
_COMMITTED = "mingus_sessions.committed"

_LSN = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$")

#: This context's last commit position on the primary, per pool. A context
#: variable, not registry state: it belongs to a thread or an asyncio task (as
#: the active scope does), and each new asyncio task starts from a copy.
_commits: ContextVar[Mapping[str, int]] = ContextVar(
    "mingus_sessions_commits", default=MappingProxyType({})
)


def parse_lsn(token: str) -> int:
    """The WAL position written ``X/Y`` (hexadecimal halves) as an integer; ValueError if not."""
    found = _LSN.match(token.strip()) if isinstance(token, str) else None
    if found is None:
        raise ValueError(
            f"{token!r} is not a commit token: pass what last_commit_token() returned "
            '(a WAL position such as "0/1A2B3C4"), or None.'
        )
    return (int(found.group(1), 16) << 32) | int(found.group(2), 16)


def format_lsn(position: int) -> str:
    return f"{position >> 32:X}/{position & 0xFFFFFFFF:X}"


def remember_commit(pool: str, position: int) -> None:
    """Note that this context committed on ``pool``'s primary up to ``position``."""
    commits = _commits.get()
    if commits.get(pool, -1) < position:
        # A new mapping each time: a copied context (a new asyncio task) must
        # not see this one's later commits, nor this one the task's.
        _commits.set(MappingProxyType({**commits, pool: position}))


#: Per pool, until when (``time.monotonic()``) this context reads from the primary:
#: set when a commit's position could not be read.
_pinned: ContextVar[Mapping[str, float]] = ContextVar(
    "mingus_sessions_pinned", default=MappingProxyType({})
)


def pin_to_primary(pool: str, seconds: float) -> None:
    """Send this context's reads of ``pool`` to the primary for ``seconds``."""
    _pinned.set(MappingProxyType({**_pinned.get(), pool: time.monotonic() + seconds}))


def pinned_to_primary(pool: str) -> bool:
    until = _pinned.get().get(pool)
    return until is not None and time.monotonic() < until


def forget_positions() -> None:
    """Forget this context's commit positions and pins (a test's clean slate)."""
    _commits.set(MappingProxyType({}))
    _pinned.set(MappingProxyType({}))


#: This context's commit positions and pins, as a task hands them back to its caller.
Positions = tuple[Mapping[str, int], Mapping[str, float]]


def context_positions() -> Positions:
    """This context's commit positions and pins (to hand back from a task of our own)."""
    return _commits.get(), _pinned.get()


def adopt_positions(positions: Positions) -> None:
    """Take on what a task of ours, run in a copy of this context, remembered."""
    commits, pinned = positions
    if commits is not _commits.get():
        _commits.set(commits)
    if pinned is not _pinned.get():
        _pinned.set(pinned)


def commit_position(pool: str) -> int | None:
    """This context's last commit position on ``pool``'s primary, or None."""
    return _commits.get().get(pool)


@dataclass(slots=True)
class ReplicaStatus:
    """What the last sample of one replica found (written by the sampler thread only)."""

    pool: str
    #: Whether the last sample reached it (None: not sampled yet).
    reachable: bool | None = None
    #: Replay lag in seconds at ``sampled_at`` (0 when it replayed all it received).
    lag: float | None = None
    #: The WAL position it had replayed (the sample's, or a later comparison's).
    replay_position: int = 0
    #: Whether it is in recovery (a standby); a promoted replica is not.
    in_recovery: bool = True
    #: ``time.monotonic()`` of the sample; 0.0 before the first.
    sampled_at: float = 0.0
    #: Why the last sample failed, or why the replica is not used.
    problem: str | None = None

    def lag_now(self, now: float) -> float | None:
        """The most the replica can lag now: the sampled lag plus the sample's age."""
        if self.lag is None or not self.sampled_at:
            return None
        return self.lag + max(0.0, now - self.sampled_at)


class ReplicaRouter:
    """Chooses among one pool's replicas, evenly, from what the samples say."""

    def __init__(
        self,
        pool: str,
        replicas: tuple[str, ...],
        max_lag: float,
        breaker_of: Callable[[str], CircuitBreaker | None],
    ) -> None:
        self.pool = pool
        self.max_lag = max_lag
        self.statuses = {name: ReplicaStatus(name) for name in replicas}
        self._names = replicas
        self._breaker_of = breaker_of
        self._turns = itertools.count()

    def eligible(self, status: ReplicaStatus, now: float) -> bool:
        """Reachable, a standby, within the lag allowed, and its breaker not open."""
        if not status.reachable or not status.in_recovery:
            return False
        lag = status.lag_now(now)
        if lag is None or lag > self.max_lag:
            return False
        breaker = self._breaker_of(status.pool)
        return breaker is None or breaker.state != "open"

    def candidates(self, after: int | None) -> list[tuple[str, bool]]:
        """The replicas to try in turn: ``(pool, whether its replay must be checked)``.

        Those whose sample already shows ``after`` replayed need no check; the
        others are tried after them, each with a comparison query.
        """
        now = time.monotonic()
        statuses = self.statuses
        usable = [name for name in self._names if self.eligible(statuses[name], now)]
        if not usable:
            return []
        start = next(self._turns) % len(usable)
        ordered = usable[start:] + usable[:start]
        if after is None:
            return [(name, False) for name in ordered]
        ready = [(name, False) for name in ordered if statuses[name].replay_position >= after]
        behind = [(name, True) for name in ordered if statuses[name].replay_position < after]
        return ready + behind

    def saw_replay(self, replica: str, position: int) -> None:
        """A scope saw ``replica`` at ``position``: later choices may skip the check."""
        status = self.statuses[replica]
        if position > status.replay_position:
            status.replay_position = position


def read_only_engine(engine: Engine, vendor: str) -> Engine:
    """``engine`` with read-only transactions, in the vendor's way, reset when returned."""
    if vendor == "postgresql":
        # The driver's flag: BEGIN READ ONLY, no extra round trip, and
        # SQLAlchemy restores the flag when the connection goes back.
        return engine.execution_options(postgresql_readonly=True)
    read_only = engine.execution_options(mingus_read_only=True)
    if vendor == "mysql":

        @event.listens_for(read_only, "begin")
        def _begin_read_only(connection: Any) -> None:
            # Applies to the transaction the next statement starts.
            connection.exec_driver_sql("SET TRANSACTION READ ONLY")

    elif vendor == "sqlite":

        @event.listens_for(read_only, "begin")
        def _query_only(connection: Any) -> None:
            connection.exec_driver_sql("PRAGMA query_only = ON")

        def _writable_again(connection: Any) -> None:
            connection.exec_driver_sql("PRAGMA query_only = OFF")

        event.listen(read_only, "commit", _writable_again)
        event.listen(read_only, "rollback", _writable_again)
    return read_only


def track_commit_positions(engine: Engine, pool: str, max_lag: float) -> None:
    """Remember, per context, the WAL position after each commit on ``pool``'s primary.

    Read in the pool's ``reset`` listener, while the connection is still the
    committing caller's (one query, in autocommit). When it cannot be read,
    this context's reads go to the primary for ``max_lag`` seconds.
    """

    @event.listens_for(engine, "commit")
    def _committing(connection: Any) -> None:
        if not connection.get_execution_options().get("postgresql_readonly"):
            connection.connection.info[_COMMITTED] = True

    @event.listens_for(engine, "reset")
    def _returned(dbapi_connection: Any, record: Any, reset_state: Any) -> None:
        if not record.info.pop(_COMMITTED, False):
            return
        if reset_state.terminate_only or not reset_state.asyncio_safe:
            # Being closed, or returned from the garbage collector: no query
            # can be sent, so reads here go to the primary for a while.
            pin_to_primary(pool, max_lag)
            return
        try:
            remember_commit(pool, _insert_position(dbapi_connection))
        except Exception as exc:  # noqa: BLE001 - the commit itself succeeded
            pin_to_primary(pool, max_lag)
            logger.warning(
                "Pool %s: could not read the primary's WAL position after a commit (%s); "
                "this context reads from the primary for %g s",
                pool,
                summary(exc),
                max_lag,
            )


def _insert_position(dbapi_connection: Any) -> int:
    """The server's WAL insert position, asked outside any transaction."""
    dbapi_connection.autocommit = True
    try:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(INSERT_POSITION_SQL)
            row = cursor.fetchone()
        finally:
            cursor.close()
    finally:
        dbapi_connection.autocommit = False
    return parse_lsn(row[0])
