"""Read replicas: routing read-only scopes, read-your-writes, and the sampler that watches lag.

A pool with ``REPLICAS`` has a pool of its own per replica (``"main@replica"``,
see ``_core/config/replicas.py``). ``session_scope(pool, read_only=True)`` and
``asession_scope(pool, read_only=True)`` open their session here:

- on a replica that the router (``_core/replicas.py``) finds eligible from the
  sampler's last look (reachable, a standby, within ``MAX_REPLICA_LAG``, its
  breaker not open), taken in turn so that reads spread evenly;
- which has replayed this context's last commit on the primary, or the
  position of ``after=token``: when the sample does not show it, one query on
  the replica compares, and a replica still behind is passed over;
- otherwise on the primary, in a read-only transaction.

The session connects when the scope opens, so a replica that refuses the
connection is counted by its breaker and passed over: the caller gets its read
from the next replica or the primary, not an error.

Read-your-writes: after each commit on a primary with replicas, the pool's
``reset`` listener (the connection is still this caller's) asks the server for
its WAL insert position (one query, in autocommit) and remembers it for this
context; :func:`last_commit_token` gives it to carry to another process.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session

from . import conf
from ._core.errors import DatabaseConnectionError
from ._core.failures import record_failure, translated
from ._core.frames import Frame
from ._core.replicas import (
    ReplicaRouter,
    ReplicaStatus,
    commit_position,
    format_lsn,
    parse_lsn,
    pinned_to_primary,
    read_only_engine,
)
from ._core.state import state
from ._core.translate import summary
from .breakers import breaker_for
from .engines import get_entry

__all__ = [
    "get_replica_statuses",
    "last_commit_token",
    "open_read_only_session",
    "router_for",
]

logger = logging.getLogger("mingus_sessions")

#: What the sampler asks each replica: whether it is a standby, what it has
#: replayed, and its lag (0 when it replayed all it received, however old the
#: last transaction; else the age of the last transaction it replayed).
SAMPLE_SQL = (
    "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text, "
    "CASE WHEN pg_last_wal_receive_lsn() IS NULL "
    "OR pg_last_wal_replay_lsn() >= pg_last_wal_receive_lsn() THEN 0 "
    "ELSE coalesce(extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp()), "
    "'Infinity') END::float8"
)
REPLAY_SQL = "SELECT pg_last_wal_replay_lsn()::text"


def last_commit_token(pool: str | None = None) -> str | None:
    """This context's last commit position on ``pool``'s primary, as a string; None if none.

    Carry it to another process (a task argument, a cookie) and pass it back as
    ``session_scope(pool, read_only=True, after=token)`` there: the read then
    sees that commit. Positions are kept only for pools with ``REPLICAS``.
    """
    name = conf.get_config().default_pool if pool is None else pool
    position = commit_position(name)
    return None if position is None else format_lsn(position)


def get_replica_statuses(pool: str) -> dict[str, ReplicaStatus]:
    """What the sampler last found of each replica of ``pool`` ({} without replicas)."""
    router = state.replica_routers.get(pool)
    return dict(router.statuses) if router is not None else {}


def router_for(pool: str) -> ReplicaRouter | None:
    """The router of ``pool``'s replicas (starting the sampler), or None without replicas."""
    router = state.replica_routers.get(pool)
    if router is not None and state.replica_sampler is not None:
        return router
    config = conf.pool_config(pool)
    if not config.replicas:
        return None
    with state.lock:
        router = state.replica_routers.get(pool)
        if router is None:
            router = ReplicaRouter(pool, config.replicas, config.max_replica_lag, breaker_for)
            # A new dict: the sampler iterates the one it read without the lock.
            state.replica_routers = {**state.replica_routers, pool: router}
        if state.replica_sampler is None:
            sampler = _Sampler()
            state.replica_sampler = sampler
            sampler.start()
    return router


def required_position(pool: str, after: str | None) -> int | None:
    """The commit position a read of ``pool`` must see: this context's, or ``after``'s."""
    position = commit_position(pool)
    if after is not None:
        given = parse_lsn(after)
        position = given if position is None else max(position, given)
    return position


# -- opening a read-only session ------------------------------------------------------------


def open_read_only_session(
    name: str,
    frame: Frame,
    after: str | None,
    open_session: Callable[..., Session],
    depth: int,
) -> Session:
    """A read-only session of pool ``name`` for ``frame``: on a replica if one may serve.

    ``open_session(entry, frame, depth, maker)`` is the scope's own opener
    (breaker admission, leak site, counters); ``depth`` is how many frames up
    from here the code that opened the scope runs.
    """
    position = required_position(name, after)
    frame.read_only = True
    router = router_for(name)
    if router is not None and not pinned_to_primary(name):
        for replica, check in router.candidates(position):
            session = _try_replica(
                router, replica, frame, position if check else None, open_session, depth + 1
            )
            if session is not None:
                frame.replica = replica
                return session
    entry = get_entry(name)
    return open_session(entry, frame, depth + 1, read_only_sessionmaker(entry))


def _try_replica(
    router: ReplicaRouter,
    replica: str,
    frame: Frame,
    position: int | None,
    open_session: Callable[..., Session],
    depth: int,
) -> Session | None:
    """A session on ``replica``, connected (and caught up to ``position``), or None."""
    entry = get_entry(replica)
    try:
        session = open_session(entry, frame, depth + 1, entry.sessionmaker)
    except DatabaseConnectionError:
        return None  # its breaker is open, or its half-open trial failed
    try:
        connection = session.connection()
        if position is not None:
            replayed = parse_lsn(connection.exec_driver_sql(REPLAY_SQL).scalar_one())
            router.saw_replay(replica, replayed)
            if replayed < position:
                _abandon(session, frame)
                return None
    except Exception as exc:
        _abandon(session, frame)
        error = translated(replica, exc)
        if isinstance(error, DatabaseConnectionError):
            record_failure(breaker_for(replica), error)
            logger.info("Replica %s refused a read (%s); trying elsewhere", replica, error)
            return None
        if error is not None:
            raise error from exc
        raise
    return session


def _abandon(session: Session, frame: Frame) -> None:
    """Close a replica's session that will not serve the scope, and uncount it."""
    if frame.trace is not None:
        # Its span ends here: the scope goes on with another session (and span).
        frame.trace.end(None)
        frame.trace = None
    session.close()
    state.sessions.total_sessions -= 1
    state.sessions.active_sessions -= 1


def read_only_sessionmaker(entry: Any) -> Any:
    """Sessions of ``entry``'s pool whose transactions refuse writes (made once per entry)."""
    maker = entry.read_only_sessionmaker
    if maker is None:
        engine = read_only_engine(entry.engine, entry.spec.vendor)
        maker = entry.read_only_sessionmaker = entry.sessionmaker.__class__(
            bind=engine, expire_on_commit=False
        )
    return maker


# -- the sampler ------------------------------------------------------------------------------


class _Sampler:
    """A daemon thread that samples every replica of every router, about once a second."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, name="mingus-replicas", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def halt(self) -> None:
        self.stop.set()
        if self.thread is not threading.current_thread():
            self.thread.join(timeout=5)

    def interval(self) -> float:
        lags = [router.max_lag for router in state.replica_routers.values()] or [5.0]
        # Several samples within the lag allowed, and no more than one a second.
        return max(0.1, min(1.0, min(lags) / 4))

    def run(self) -> None:
        while not self.stop.is_set():
            for router in list(state.replica_routers.values()):
                for status in router.statuses.values():
                    if self.stop.is_set():
                        return
                    sample(status)
            self.stop.wait(self.interval())


def sample(status: ReplicaStatus) -> None:
    """Look at one replica now, and write what was found into ``status``."""
    try:
        engine = get_entry(status.pool).engine
        with engine.connect() as connection:
            in_recovery, replayed, lag = connection.exec_driver_sql(SAMPLE_SQL).one()
    except Exception as exc:  # noqa: BLE001 - an unreachable replica is what this records
        error = translated(status.pool, exc)
        status.reachable = False
        status.problem = summary(error if error is not None else exc)
        status.sampled_at = time.monotonic()
        return
    status.in_recovery = bool(in_recovery)
    status.problem = None if in_recovery else "not in recovery: promoted, or not a standby"
    if replayed is not None:
        position = parse_lsn(replayed)
        if position > status.replay_position:
            status.replay_position = position
    status.lag = float(lag) if lag is not None else None
    status.reachable = True
    status.sampled_at = time.monotonic()
