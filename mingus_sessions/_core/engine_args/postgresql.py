"""PostgreSQL's engine arguments: psycopg 3 or psycopg2, socket timeouts, PgBouncer, read-only.

``SOCKET_TIMEOUT`` becomes libpq's TCP keepalive and ``tcp_user_timeout``
parameters; ``PGBOUNCER`` adapts the connection to the pooler (no prepared
statements in transaction mode, read-only mode without a startup parameter).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from typing import Any

from sqlalchemy import URL

from ..config import PoolConfig
from .common import DEFAULT_CONNECT_TIMEOUT, VendorArgs, port_of, split_options

__all__ = ["postgresql_args", "postgresql_driver"]

#: OPTIONS keys that Django's backend consumes itself.
DJANGO_ONLY = frozenset({"isolation_level", "assume_role", "pool", "server_side_binding"})

# psycopg 3's IsolationLevel values and psycopg2's ISOLATION_LEVEL_* constants
# differ; Django stores whichever its driver uses in OPTIONS["isolation_level"].
_PSYCOPG_LEVELS = {
    1: "READ UNCOMMITTED",
    2: "READ COMMITTED",
    3: "REPEATABLE READ",
    4: "SERIALIZABLE",
}
_PSYCOPG2_LEVELS = {
    0: "AUTOCOMMIT",
    1: "READ COMMITTED",
    2: "REPEATABLE READ",
    3: "SERIALIZABLE",
    4: "READ UNCOMMITTED",
}


def postgresql_driver() -> str:
    """The PostgreSQL driver Django would use: psycopg 3 if installed, else psycopg2."""
    return "psycopg" if importlib.util.find_spec("psycopg") is not None else "psycopg2"


def postgresql_args(
    settings_dict: Mapping[str, Any], pool: PoolConfig, pg_driver: str | None
) -> VendorArgs:
    """The URL, connect arguments and per-connection SQL of a PostgreSQL pool."""
    options, django_only = split_options(settings_dict, DJANGO_ONLY)
    driver = pg_driver or postgresql_driver()
    url = URL.create(
        f"postgresql+{driver}",
        username=settings_dict.get("USER") or None,
        password=settings_dict.get("PASSWORD") or None,
        host=settings_dict.get("HOST") or None,
        port=port_of(settings_dict.get("PORT"), pool),
        database=settings_dict.get("NAME") or ("postgres" if "service" not in options else None),
    )
    if pool.socket_timeout is not None:
        # Key by key, so a keepalive parameter of the project's own wins.
        for key, value in _socket_timeout_args(pool.socket_timeout).items():
            options.setdefault(key, value)
    options.setdefault("connect_timeout", DEFAULT_CONNECT_TIMEOUT)
    # Names the backend in pg_stat_activity, so operators (and the fault
    # tests) can tell which pool a server process belongs to.
    options.setdefault("application_name", f"mingus_sessions:{pool.name}")
    isolation = pool.isolation_level or _isolation_from_django(
        django_only.get("isolation_level"), driver
    )
    on_connect: list[str] = []
    if django_only.get("assume_role"):
        on_connect.append(f"SET ROLE {_quote_ident(str(django_only['assume_role']))}")
    if pool.read_only and pool.pgbouncer == "session":
        # PgBouncer refuses the startup parameter below, but in session
        # mode this server session is ours until we disconnect (and
        # PgBouncer's DISCARD ALL resets it then).
        on_connect.append("SET default_transaction_read_only = on")
    connect_args = {**options, **pool.connect_args}
    _adapt_to_pgbouncer(connect_args, pool, driver)
    if pool.read_only and pool.pgbouncer is None and isolation == "AUTOCOMMIT":
        # In AUTOCOMMIT no transaction begins READ ONLY, so the session itself
        # must be read-only: a startup parameter, which PgBouncer would refuse
        # (E018 says so for a declared one). Any other READ_ONLY pool relies
        # on the driver's BEGIN READ ONLY alone and so also works through an
        # undeclared pooler. Added last, so CONNECT_ARGS["options"] cannot drop it.
        flag = "-c default_transaction_read_only=on"
        given = connect_args.get("options")
        connect_args["options"] = f"{given} {flag}" if given else flag
    return VendorArgs(url, driver, connect_args, isolation, on_connect)


def _isolation_from_django(value: Any, driver: str) -> str | None:
    if value is None:
        return None
    name = getattr(value, "name", None)
    if isinstance(name, str):  # psycopg's IsolationLevel enum
        return name.replace("_", " ")
    if isinstance(value, int):
        table = _PSYCOPG_LEVELS if driver == "psycopg" else _PSYCOPG2_LEVELS
        return table.get(value)
    return str(value).upper()


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _socket_timeout_args(seconds: float) -> dict[str, int]:
    """libpq parameters under which a dead peer costs a socket at most ``seconds``.

    Three ways a connection meets a silent partition, each bounded:

    * data sent and never acknowledged (a statement or a pre-ping sent into
      the void): ``tcp_user_timeout`` drops the connection;
    * a statement acknowledged, its answer never coming: keepalive probes
      start after ``keepalives_idle`` and, with a user timeout set, Linux
      drops the connection at the first probe past ``tcp_user_timeout``
      (other systems after ``keepalives_count`` probes);
    * a connect attempt: ``connect_timeout``.

    A checkout whose pre-ping fails opens a new connection, so the user
    timeout and the connect timeout together stay within 80% of ``seconds``,
    less half a second for the retransmission timer's slack (about 0.4 s
    measured on Linux 6). A healthy server's kernel answers the probes, so a
    long statement is never cut.
    """
    budget = seconds * 0.8
    connect = min(DEFAULT_CONNECT_TIMEOUT, max(2, int(seconds // 3)))  # libpq's minimum is 2
    interval = max(1, int(seconds // 10))
    idle = max(1, int(seconds // 3))
    return {
        "keepalives": 1,
        "keepalives_idle": idle,
        "keepalives_interval": interval,
        "keepalives_count": max(1, int((budget - idle) // interval)),
        "tcp_user_timeout": int((budget - connect - 0.5) * 1000),
        "connect_timeout": connect,
    }


def _adapt_to_pgbouncer(connect_args: dict[str, Any], pool: PoolConfig, driver: str) -> None:
    """Turn off what PgBouncer in transaction mode cannot carry from one transaction to the next.

    psycopg 3 prepares a statement on the server once it has run a few times;
    the next transaction may get another server connection, where that
    statement does not exist (or another client's of the same name does).
    psycopg2 never prepares statements.
    """
    if pool.pgbouncer == "transaction" and not pool.pgbouncer_prepared and driver == "psycopg":
        connect_args.setdefault("prepare_threshold", None)
