"""R1 across a restart: idle connections used a moment ago cost no scope an error.

The owned cluster is restarted (fast shutdown: every backend is terminated)
right after the pool's connections were used, well within ``PING_IDLE``: the
pool sends them no ping, yet the check at checkout reads the closed sockets
and replaces them, so the first scopes after the restart all succeed.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy import text

from mingus_sessions import get_engine, session_scope
from mingus_sessions._core.state import state
from tests.faults.conftest import Cluster, checked_out, configure

pytestmark = [
    pytest.mark.postgresql,
    pytest.mark.django_db(transaction=True, databases=["default", "other"]),
]

CONNECTIONS = 4


def backend_pid() -> int:
    with session_scope() as session:
        return int(session.execute(text("SELECT pg_backend_pid()")).scalar_one())


def fill_the_pool() -> set[int]:
    """Use ``CONNECTIONS`` connections at once and return them: they are idle, just used."""
    engine = get_engine()
    held = [engine.connect() for _ in range(CONNECTIONS)]
    pids = {int(c.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()) for c in held}
    for connection in held:
        connection.close()
    return pids


@pytest.mark.parametrize("ping_idle", [1.0, 60.0])
def test_connections_used_just_before_a_restart_are_replaced_without_errors(
    settings: Any, cluster: Cluster, ping_idle: float
) -> None:
    """Restart right after use (PING_IDLE 1 s, and 60 s so no ping can be what saved them):
    concurrent scopes after it all succeed, on new backends, with no ping sent."""
    configure(
        settings,
        main={"POOL_SIZE": CONNECTIONS, "MAX_OVERFLOW": 0, "PING_IDLE": ping_idle},
    )
    old = fill_the_pool()
    assert len(old) == CONNECTIONS
    pool = get_engine().pool
    pings = [0]
    ping = pool._dialect._do_ping_w_event

    def counted(connection: Any) -> bool:
        pings[0] += 1
        return bool(ping(connection))

    pool._dialect._do_ping_w_event = counted
    try:
        cluster.restart()
        errors: list[BaseException] = []
        seen: set[int] = set()
        lock = threading.Lock()

        def scopes() -> None:
            for _ in range(5):
                try:
                    pid = backend_pid()
                except BaseException as exc:
                    with lock:
                        errors.append(exc)
                else:
                    with lock:
                        seen.add(pid)

        threads = [threading.Thread(target=scopes) for _ in range(CONNECTIONS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    finally:
        del pool._dialect._do_ping_w_event
    assert errors == []
    assert seen
    assert not seen & old
    assert pings[0] == 0
    assert state.sessions.snapshot()["failed_sessions"] == 0
    assert checked_out() == 0
