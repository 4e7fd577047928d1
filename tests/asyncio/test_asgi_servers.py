"""request.adb_session under real ASGI servers, driven by a client that really disconnects.

A client that goes away cancels its request (Django's ASGI handler cancels the
view when the server reports the disconnect): the request's async scope rolls
back and returns its connection. After 1,000 such requests against uvicorn,
nothing is checked out, no backend is left "idle in transaction", and no row of
a cancelled request was committed. The servers run on the PostgreSQL test
database (shared with this process), each in a process group of its own.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fleet.processes import Started, free_port, wait_for

pytestmark = [pytest.mark.postgresql, pytest.mark.django_db(transaction=True)]

CANCELLED_REQUESTS = 1000
AT_ONCE = 50


def _server_env(test_database: str) -> dict[str, str]:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "MINGUS_TEST_DATABASE": "postgresql",
        "MINGUS_TEST_USE_TEST_NAMES": "1",
        "PYTHONWARNINGS": "error::RuntimeWarning",
    }


SERVERS = {
    "uvicorn": lambda port: [
        *(sys.executable, "-m", "uvicorn", "--factory", "django.core.asgi:get_asgi_application"),
        *("--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"),
    ],
    "daphne": lambda port: [
        *(sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port)),
        "tests.asgi:application",
    ],
    "gunicorn+uvicorn": lambda port: [
        *(sys.executable, "-m", "gunicorn", "tests.asgi:application"),
        *("-k", "uvicorn_worker.UvicornWorker", "-w", "2", "-b", f"127.0.0.1:{port}"),
    ],
}


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@pytest.fixture
def serve(tmp_path: Path, test_database: str) -> Iterator[Any]:
    started: list[Started] = []

    def start(kind: str) -> str:
        port = free_port()
        server = Started(SERVERS[kind](port), _server_env(test_database), tmp_path / f"{kind}.log")
        started.append(server)
        base = f"http://127.0.0.1:{port}"

        def answers() -> bool:
            try:
                return _get(f"{base}/adb/count/")[0] == 200
            except OSError:
                return False

        wait_for(answers, 30, f"{kind} to serve", server)
        return base

    yield start
    for server in started:
        server.stop()


async def _request_then_leave(port: int, title: str, stay: float) -> None:
    """Send a request, wait ``stay`` seconds, and close the socket without reading."""
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET /adb/write-wait/{title}/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    await writer.drain()
    await asyncio.sleep(stay)
    writer.close()
    await writer.wait_closed()


def _leftovers(pg: Any, test_database: str) -> tuple[int, int]:
    """Backends of the test database idle in a transaction, and rows written by the tests."""
    idle = pg.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
        "AND state LIKE 'idle in transaction%%'",
        (test_database,),
    ).fetchone()[0]
    rows = pg.execute("SELECT count(*) FROM testapp_note WHERE title LIKE 'gone-%%'").fetchone()[0]
    return int(idle), int(rows)


def test_a_thousand_cancelled_requests_leave_nothing_behind(
    serve: Any, pg: Any, test_database: str
) -> None:
    base = serve("uvicorn")
    port = int(base.rsplit(":", 1)[1])
    before = json.loads(_get(f"{base}/adb/pool/")[1])["sessions"]

    async def clients() -> None:
        for first in range(0, CANCELLED_REQUESTS, AT_ONCE):
            await asyncio.gather(
                *(
                    # Most leave once the view has written, some while it is
                    # still starting (50 requests at once take the server a while,
                    # longer under coverage's tracing).
                    _request_then_leave(port, f"gone-{n}", 0.05 + (n % 10) * 0.05)
                    for n in range(first, first + AT_ONCE)
                )
            )

    asyncio.run(clients())

    def settled() -> bool:
        status, body = _get(f"{base}/adb/pool/")
        pool = json.loads(body) if status == 200 else {}
        return pool.get("checked_out") == 0 and _leftovers(pg, test_database)[0] == 0

    wait_for(settled, 30, "the cancelled requests' scopes to end")
    after = json.loads(_get(f"{base}/adb/pool/")[1])["sessions"]
    sessions = {key: after[key] - before[key] for key in before}
    # The requests reached their views: many opened a session and wrote before
    # their client left (all but a few on an idle machine; a quarter at least on
    # a loaded one, under coverage), and every one of those rolled back.
    assert sessions["total_sessions"] >= CANCELLED_REQUESTS * 0.25, sessions
    assert sessions["transaction_rollbacks"] == sessions["total_sessions"], sessions
    assert sessions["committed_transactions"] == 0, sessions
    idle_in_transaction, committed = _leftovers(pg, test_database)
    assert idle_in_transaction == 0
    assert committed == 0
    # The server still serves, with its pool whole.
    assert _get(f"{base}/adb/write/after-the-storm/")[0] == 200
    assert (
        pg.execute("SELECT count(*) FROM testapp_note WHERE title = 'after-the-storm'").fetchone()[
            0
        ]
        == 1
    )


@pytest.mark.parametrize("kind", list(SERVERS))
def test_each_server_commits_rolls_back_and_keeps_its_loops_apart(
    serve: Any, pg: Any, kind: str
) -> None:
    """No "attached to a different loop" however the server runs its loops and workers."""
    base = serve(kind)
    for n in range(20):
        assert _get(f"{base}/adb/write/{kind}-{n}/")[0] == 200
        assert _get(f"{base}/adb/write/{kind}-rolled-back-{n}/400/")[0] == 400
    found = pg.execute(
        "SELECT count(*) FROM testapp_note WHERE title LIKE %s", (f"{kind}-%",)
    ).fetchone()[0]
    assert found == 20
