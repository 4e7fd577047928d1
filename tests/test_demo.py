"""The demo project, end to end, through ``manage.py`` in subprocesses.

The suite's settings (``tests.settings``) do not install the demo's app, so
these tests run the demo as a user would: its own settings, a fresh SQLite
file per module, the commands ``make demo`` runs, then the page and the
services in a ``manage.py shell``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MANAGE = REPO / "manage.py"


def _manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``manage.py *args`` with the demo's settings; never raises on a failure."""
    return subprocess.run(
        [sys.executable, str(MANAGE), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _shell_json(env: dict[str, str], code: str) -> object:
    """Run ``code`` in ``manage.py shell`` and decode the JSON it prints last."""
    out = _ok(_manage(env, "shell", "-v", "0", "-c", code))
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, str], str]:
    """A migrated demo database of this module's own, with the demo data loaded.

    Returns the environment that selects it and the first ``load_demo_data``'s output.
    """
    database = tmp_path_factory.mktemp("demo") / "demo.sqlite3"
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{database}",
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "DJANGO_DEBUG": "1",
    }
    _ok(_manage(env, "migrate", "--no-input", "-v", "0"))
    assert database.exists()
    return env, _ok(_manage(env, "load_demo_data"))


@pytest.fixture
def demo_env(demo: tuple[dict[str, str], str]) -> dict[str, str]:
    """The environment that selects this module's demo database."""
    return demo[0]


def test_check_passes(demo_env: dict[str, str]) -> None:
    out = _ok(_manage(demo_env, "check"))
    assert "no issues" in out


def test_load_demo_data_is_idempotent(demo: tuple[dict[str, str], str]) -> None:
    env, first = demo
    assert "Demo users: 5 (5 new)" in first
    assert "50 created, 0 already present" in first

    again = _ok(_manage(env, "load_demo_data"))
    assert "5 (0 new)" in again
    assert "0 created, 50 already present" in again


def test_engagement_summary_counts_every_communication(demo_env: dict[str, str]) -> None:
    found = _shell_json(
        demo_env,
        "import json; from project.communications import services; "
        "from project.communications.models import CommunicationMetrics as M; "
        "print(json.dumps({'summary': services.engagement_summary().as_dict(), "
        "'rows': M.objects.count(), "
        "'demo_rows': M.objects.filter(idempotency_key__startswith='demo-').count()}))",
    )
    assert isinstance(found, dict)
    summary, rows = found["summary"], found["rows"]
    # Other tests of this module may add a row of their own to the same database.
    assert found["demo_rows"] == 50
    assert summary["total"] == rows >= 50
    assert sum(summary["by_channel"].values()) == rows
    assert sum(summary["by_status"].values()) == rows
    assert sum(sum(s.values()) for s in summary["by_channel_status"].values()) == rows
    # record_communication bumped the engagement row in the same transaction.
    assert summary["engaged_users"] == 5
    assert summary["engagement_total"] == rows


def test_create_demo_admin_prints_working_credentials(demo_env: dict[str, str]) -> None:
    out = _ok(_manage(demo_env, "create_demo_admin"))
    assert "http://127.0.0.1:8000/admin/" in out
    assert "Username: admin" in out
    assert "Password: mingus-demo" in out

    reset = _ok(_manage(demo_env, "create_demo_admin", "--password", "another-pass"))
    assert "password reset" in reset
    assert "Password: another-pass" in reset
    user = _shell_json(
        demo_env,
        "import json; from django.contrib.auth import authenticate; "
        "u = authenticate(username='admin', password='another-pass'); "
        "print(json.dumps(u and [u.username, u.is_staff, u.is_superuser]))",
    )
    assert user == ["admin", True, True]


# Runs in the demo's shell: GET the page, POST the form with the CSRF cookie's
# token (checks enforced), follow the redirect, and report what changed.
_PAGE_SCRIPT = """
import json
from django.contrib.auth.models import User
from django.test import Client
from project.communications import services
from project.communications.models import CommunicationMetrics
client = Client(enforce_csrf_checks=True, SERVER_NAME="127.0.0.1")
page = client.get("/")
before = CommunicationMetrics.objects.count()
user = User.objects.get(username="ada")
refused = client.post("/", {"user": user.pk, "channel": "push", "message_type": "weekly_checkin",
                            "status": "sent"})
posted = client.post("/", {"user": user.pk, "channel": "push", "message_type": "weekly_checkin",
                           "status": "delivered",
                           "csrfmiddlewaretoken": client.cookies["csrftoken"].value})
after = client.get(posted["Location"])
newest = services.recent_communications(limit=1)[0]
print(json.dumps({
    "get": page.status_code, "refused": refused.status_code, "post": posted.status_code,
    "location": posted["Location"], "after": after.status_code,
    "added": CommunicationMetrics.objects.count() - before,
    "newest": [newest.username, newest.channel, newest.status],
    "flash": "Recorded communication" in after.content.decode(),
}))
"""


def test_index_page_records_a_communication(demo_env: dict[str, str]) -> None:
    result = _shell_json(demo_env, _PAGE_SCRIPT)
    assert result == {
        "get": 200,
        "refused": 403,
        "post": 302,
        "location": "/",
        "after": 200,
        "added": 1,
        "newest": ["ada", "push", "delivered"],
        "flash": True,
    }
