"""The demo project, end to end, through ``manage.py`` in subprocesses.

The suite's settings (``tests.settings``) do not install the demo's app, so
these tests run the demo as a user would: its own settings, a fresh SQLite
file per module, the commands ``make demo`` runs, then the pages (through
Django's test ``Client``, so ``SessionMiddleware`` runs as in the server) and
the services in a ``manage.py shell``.
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
# token (checks enforced), follow the redirect, and report what changed. Then
# the same POST with a failure after the write (the view raises, Django
# answers 500): the request's session must roll the write back.
_PAGE_SCRIPT = """
import json
from unittest import mock
from django.contrib.auth.models import User
from django.test import Client
from project.communications import services, views
from project.communications.models import CommunicationMetrics, UserEngagementMetrics
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
added = CommunicationMetrics.objects.count() - before

engaged = UserEngagementMetrics.objects.get(user=user).total_communications
broken = Client(SERVER_NAME="127.0.0.1", raise_request_exception=False)
with mock.patch.object(views.messages, "success", side_effect=RuntimeError("after the write")):
    failed = broken.post("/", {"user": user.pk, "channel": "email",
                               "message_type": "bill_reminder", "status": "sent"})
print(json.dumps({
    "get": page.status_code, "refused": refused.status_code, "post": posted.status_code,
    "location": posted["Location"], "after": after.status_code,
    "added": added,
    "newest": [newest.username, newest.channel, newest.status],
    "flash": "Recorded communication" in after.content.decode(),
    "failed": failed.status_code,
    "added_by_failed": CommunicationMetrics.objects.count() - before - added,
    "counted_by_failed": UserEngagementMetrics.objects.get(user=user).total_communications
    - engaged,
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
        # The write happened on the request's session, which the middleware
        # rolled back with the 500: neither the row nor the counter landed.
        "failed": 500,
        "added_by_failed": 0,
        "counted_by_failed": 0,
    }


# Runs in the demo's shell: the preferences page of a demo user. A save (ORM
# save() plus a SQLAlchemy UPDATE of last_activity, joined to Django's
# transaction) commits both; a simulated failure after both writes and an
# invalid form leave both as they were. "edsger" then loses both rows, to
# show the INSERT paths (and their rollback); his rows are put back after.
_PREFERENCES_SCRIPT = """
import json
from django.test import Client
from project.communications.models import CommunicationPreferences as Prefs
from project.communications.models import UserEngagementMetrics as Engagement

def iso(value):
    return value and value.isoformat()

def state(username):
    p = Prefs.objects.filter(user__username=username).first()
    e = Engagement.objects.filter(user__username=username).first()
    return {
        "prefs": p and [p.sms_enabled, p.email_enabled, iso(p.quiet_hours_start),
                        iso(p.quiet_hours_end), iso(p.updated_at)],
        "engagement": e and [e.total_communications, e.engagement_score, iso(e.last_activity)],
    }

client = Client(enforce_csrf_checks=True, SERVER_NAME="127.0.0.1")
out = {}
start = client.get("/preferences/")
out["start"] = [start.status_code, start["Location"]]
out["get"] = client.get("/preferences/ada/").status_code
out["not_demo"] = client.get("/preferences/admin/").status_code
token = {"csrfmiddlewaretoken": client.cookies["csrftoken"].value}
out["refused"] = client.post("/preferences/ada/", {"email_enabled": "on"}).status_code
out["before"] = state("ada")
saved = client.post("/preferences/ada/", {**token, "email_enabled": "on",
                                          "quiet_hours_start": "21:00",
                                          "quiet_hours_end": "06:30"})
out["saved"] = [saved.status_code, saved["Location"]]
out["saved_flash"] = "both committed in one transaction" in client.get(
    saved["Location"]).content.decode()
out["after_save"] = state("ada")
failed = client.post("/preferences/ada/", {**token, "sms_enabled": "on",
                                           "simulate_failure": "on"})
out["failed"] = failed.status_code
out["failed_page"] = "Unchanged: neither write was committed." in failed.content.decode()
out["after_failure"] = state("ada")
out["invalid"] = client.post("/preferences/ada/", {**token, "sms_enabled": "on",
                                                   "quiet_hours_start": "21:00"}).status_code
out["after_invalid"] = state("ada")

kept_prefs = Prefs.objects.get(user__username="edsger")
kept_engagement = Engagement.objects.get(user__username="edsger")
kept_prefs.delete()
Engagement.objects.filter(pk=kept_engagement.pk).delete()
out["new_failed"] = client.post("/preferences/edsger/", {**token, "sms_enabled": "on",
                                                         "simulate_failure": "on"}).status_code
out["new_after_failure"] = state("edsger")
out["new_saved"] = client.post("/preferences/edsger/", {**token, "sms_enabled": "on"}).status_code
out["new_after_save"] = state("edsger")
Prefs.objects.filter(user__username="edsger").delete()
kept_prefs.save(force_insert=True)
Engagement.objects.filter(user__username="edsger").delete()
kept_engagement.save(force_insert=True)
print(json.dumps(out))
"""


def test_preferences_page_commits_or_rolls_back_both_writes(demo_env: dict[str, str]) -> None:
    from datetime import datetime

    found = _shell_json(demo_env, _PREFERENCES_SCRIPT)
    assert isinstance(found, dict)
    assert found["start"] == [302, "/preferences/ada/"]
    assert (found["get"], found["not_demo"], found["refused"]) == (200, 404, 403)

    before, saved = found["before"], found["after_save"]
    assert found["saved"] == [302, "/preferences/ada/"]
    assert found["saved_flash"] is True
    # The ORM write: the posted values, and a new updated_at (auto_now).
    assert saved["prefs"][:4] == [False, True, "21:00:00", "06:30:00"]
    assert saved["prefs"][4] > before["prefs"][4]
    # The SQLAlchemy write, committed with it: last_activity moved, the counters did not.
    assert saved["engagement"][:2] == before["engagement"][:2]
    last_activity = datetime.fromisoformat(saved["engagement"][2])
    assert last_activity > datetime.fromisoformat(before["engagement"][2])
    assert last_activity.utcoffset() is not None  # aware, as the ORM reads it

    # Raised inside the atomic block after both writes: neither landed.
    assert found["failed"] == 500
    assert found["failed_page"] is True
    assert found["after_failure"] == saved
    assert found["invalid"] == 400
    assert found["after_invalid"] == saved

    # A user without rows: the failure leaves none, the save inserts both
    # (the engagement counters with the model's defaults, through table_for).
    assert found["new_failed"] == 500
    assert found["new_after_failure"] == {"prefs": None, "engagement": None}
    assert found["new_saved"] == 302
    new = found["new_after_save"]
    assert new["prefs"][:4] == [True, False, None, None]
    assert new["engagement"][:2] == [0, 0.0]
    assert new["engagement"][2] is not None


# Runs in the demo's shell: GET the analytics page and count the same things
# with the ORM, for the days the page shows.
_ANALYTICS_SCRIPT = r"""
import json, re
from datetime import date, timezone
from django.db.models import Count
from django.db.models.functions import TruncDate
from django.test import Client
from project.communications.models import CommunicationMetrics as M

page = Client(SERVER_NAME="127.0.0.1").get("/analytics/")
html = page.content.decode()

def table(table_id, key):
    body = html.split(f'id="{table_id}"', 1)[1].split("</table>", 1)[0]
    return {name: int(n) for name, n in re.findall(key + r'</th><td class="num">(\d+)<', body)}

shown_days = table("last-days", r"<th>(\d{4}-\d\d-\d\d) \w+")
days = [date.fromisoformat(d) for d in shown_days]
per_day = dict(
    M.objects.annotate(day=TruncDate("sent_at", tzinfo=timezone.utc))
    .filter(day__in=days).values("day").annotate(n=Count("id")).values_list("day", "n")
)
top = (M.objects.values("user__username").annotate(n=Count("id"))
       .order_by("-n", "user__username").values_list("user__username", "n")[:5])
print(json.dumps({
    "status": page.status_code,
    "shown": {
        "by_channel": table("by-channel", r"<th>(\w+)"),
        "by_status": table("by-status", r"<th>(\w+)"),
        "top_users": table("top-users", r"<th>(\w+)"),
        "last_days": shown_days,
    },
    "orm": {
        "by_channel": dict(M.objects.values("channel").annotate(n=Count("id"))
                           .values_list("channel", "n")),
        "by_status": dict(M.objects.values("status").annotate(n=Count("id"))
                          .values_list("status", "n")),
        "top_users": dict(top),
        "last_days": {day.isoformat(): per_day.get(day, 0) for day in days},
    },
    "total": M.objects.count(),
}))
"""


def test_analytics_page_counts_match_the_orm(demo_env: dict[str, str]) -> None:
    found = _shell_json(demo_env, _ANALYTICS_SCRIPT)
    assert isinstance(found, dict)
    assert found["status"] == 200
    shown, orm = found["shown"], found["orm"]
    # The channel table's footer row ("All") is the total.
    assert shown["by_channel"].pop("All") == found["total"]
    # Channels and statuses without rows are listed with 0; the ORM omits them.
    assert {k: v for k, v in shown["by_channel"].items() if v} == orm["by_channel"]
    assert {k: v for k, v in shown["by_status"].items() if v} == orm["by_status"]
    assert sum(shown["by_channel"].values()) == found["total"]
    assert shown["top_users"] == orm["top_users"]
    assert len(shown["last_days"]) == 7
    assert shown["last_days"] == orm["last_days"]
    # load_demo_data spreads its rows over the last days (one every 4 hours).
    assert sum(shown["last_days"].values()) >= 40
