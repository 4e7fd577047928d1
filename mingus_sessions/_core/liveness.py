"""Liveness of an idle connection without a round trip, where the driver can tell.

A backend that the server terminated (``pg_terminate_backend``, a restart, an
idle timeout) sends an error message and closes its socket; the message waits
in the socket, unread, until the client next talks to it. Reading what is
there through the driver (psycopg's ``pgconn.consume_input()``, which never
blocks on psycopg's non-blocking connections) surfaces it at checkout, without
sending anything: no raw socket read, which would break TLS and misread the
server's notices and parameter reports. An async engine's connection is read
the same way, with no await, as the read never waits.

The same read keeps the server's parameter reports current, and PostgreSQL 14+
reports ``in_hot_standby`` on its own when a standby is promoted or a primary
is turned into a standby; so a pool of a primary can discard a connection to a
server in recovery for free.

:func:`liveness_check` returns ``None`` for drivers with no such check (SQLite
has no server; MySQL's and psycopg2's clients expose none): the pool then pings.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["LivenessCheck", "liveness_check"]

#: Takes a DB-API connection; False when it must not be used.
LivenessCheck = Callable[[Any], bool]


def liveness_check(backend: str, *, primary: bool) -> LivenessCheck | None:
    """The check for ``backend`` ("vendor+driver"), or None if the driver offers none.

    ``primary``: the pool writes, so a connection to a hot standby is not alive.
    """
    if backend == "postgresql+psycopg":
        return _psycopg_check(primary, _own_pgconn)
    if backend == "postgresql+psycopg_async":
        return _psycopg_check(primary, _wrapped_pgconn)
    return None


def _own_pgconn(connection: Any) -> Any:
    return connection.pgconn


def _wrapped_pgconn(connection: Any) -> Any:
    # An async engine's DB-API connection is SQLAlchemy's adapter around
    # psycopg's AsyncConnection; reading what waits in the socket needs no await.
    return connection.driver_connection.pgconn


def _psycopg_check(primary: bool, pgconn_of: Callable[[Any], Any]) -> LivenessCheck:
    from psycopg import OperationalError, pq

    ok = pq.ConnStatus.OK
    # An idle connection is IDLE; INTRANS or INERROR if a checkin's reset
    # failed part-way. ACTIVE (a command still running) and UNKNOWN (the
    # socket is gone) mean it cannot be handed to anyone.
    busy = (pq.TransactionStatus.ACTIVE, pq.TransactionStatus.UNKNOWN)

    def alive(connection: Any) -> bool:
        pgconn = pgconn_of(connection)
        try:
            # The first read may stop at the server's FATAL message; the
            # second then meets the closed socket, which marks the connection bad.
            pgconn.consume_input()
            pgconn.consume_input()
        except OperationalError:
            return False
        if pgconn.status != ok or pgconn.transaction_status in busy:
            return False
        return not (primary and pgconn.parameter_status(b"in_hot_standby") == b"on")

    return alive
