"""``pool_check`` says why on the run's own cluster: a wrong password, a hung server.

The cluster (scripts/pg_cluster.sh) asks one role, ``mingus_h4_auth``, for its
password and trusts the others, so a wrong password is refused for real; its
postmaster is then SIGSTOPped, so a new connection hangs until
``connect_timeout`` ("timed out"), and with its backends stopped too, a ping on
a pooled connection hangs past the check's own deadline. The closed port, the
unknown host, the missing database and the unknown role are in
tests/surfaces/test_pool_check.py.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connections

from tests.faults.conftest import Cluster, configure
from tests.helpers import admin_connection, wait_for_health_pings

pytestmark = [
    pytest.mark.postgresql,
    pytest.mark.django_db(transaction=True, databases=["default", "other"]),
]

ROLE = "mingus_h4_auth"


def pool_check(*args: str) -> tuple[int, list[str]]:
    """``pool_check --local *args``: (exit code, stdout lines)."""
    out = io.StringIO()
    try:
        call_command("pool_check", "--local", *args, stdout=out, stderr=io.StringIO())
    except CommandError as error:
        return error.returncode, out.getvalue().splitlines()
    return 0, out.getvalue().splitlines()


@pytest.fixture
def password_role() -> Iterator[str]:
    """A role whose password is "right" (the cluster's pg_hba asks it for it)."""
    admin = admin_connection()
    try:
        admin.execute(f"DROP ROLE IF EXISTS {ROLE}")
        admin.execute(f"CREATE ROLE {ROLE} LOGIN PASSWORD 'right'")
        yield ROLE
    finally:
        admin.execute(f"DROP ROLE IF EXISTS {ROLE}")
        admin.close()


def test_a_wrong_password_is_authentication_failed(settings: Any, password_role: str) -> None:
    """The server refuses the password: "unreachable: authentication failed"; the right one
    passes."""
    database = connections["default"].settings_dict["NAME"]
    configure(
        settings,
        auth={
            "DATABASE": "default",
            "POOL_SIZE": 1,
            "MAX_OVERFLOW": 0,
            "CONNECT_ARGS": {"user": password_role, "password": "wrong", "dbname": database},
        },
    )
    code, lines = pool_check("--pool", "auth", "--timeout", "5")
    assert (code, lines[0]) == (2, "auth: unhealthy (unreachable: authentication failed)")
    configure(
        settings,
        auth={
            "DATABASE": "default",
            "POOL_SIZE": 1,
            "MAX_OVERFLOW": 0,
            "CONNECT_ARGS": {"user": password_role, "password": "right", "dbname": database},
        },
    )
    assert pool_check("--pool", "auth") == (0, ["auth: healthy (ok)", "overall: healthy"])


def test_a_stopped_server_is_timed_out(settings: Any, cluster: Cluster) -> None:
    """SIGSTOP: a new connection times out (connect_timeout), and a ping on a pooled
    connection whose backend is stopped too passes the check's deadline; both "timed out"."""
    configure(
        settings,
        main={"CONNECT_ARGS": {"connect_timeout": 2}},
        fresh={"DATABASE": "default", "CONNECT_ARGS": {"connect_timeout": 2}},
    )
    assert pool_check("--pool", "main")[0] == 0  # main now holds an idle connection
    cluster.pause(backends=False)
    try:
        code, lines = pool_check("--pool", "fresh", "--timeout", "5")
        assert (code, lines[0]) == (2, "fresh: unhealthy (unreachable: timed out)")
    finally:
        cluster.resume()
    cluster.pause(backends=True)
    try:
        code, lines = pool_check("--pool", "main", "--timeout", "1")
        assert (code, lines[0]) == (
            2,
            "main: unhealthy (unreachable: timed out (no answer within 1 s))",
        )
    finally:
        cluster.resume()
        wait_for_health_pings()
