"""The demo project, end to end, through ``manage.py`` in subprocesses.

The suite's settings (``tests.settings``) do not install the demo's app, so
these tests run the demo as a user would: its own settings, a fresh SQLite
file per module, the commands ``make demo`` runs, then the pages (through
Django's test ``Client``, so ``SessionMiddleware`` runs as in the server) and
the services in a ``manage.py shell``. The Celery tests start the demo's
worker (``scripts/demo.sh worker``, what ``make demo`` runs) on the server-less
broker and, when Redis is reachable, on Redis.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import closing, contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
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


#: Settings the environment may carry that would change the demo's broker or queue.
_CELERY_ENV = ("CELERY_BROKER_URL", "CELERY_TASK_DEFAULT_QUEUE")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, str], str]:
    """A migrated demo database of this module's own, with the demo data loaded.

    Returns the environment that selects it and the first ``load_demo_data``'s output.
    """
    var_dir = tmp_path_factory.mktemp("demo")
    database = var_dir / "demo.sqlite3"
    env = {
        **{k: v for k, v in os.environ.items() if k not in _CELERY_ENV},
        "DATABASE_URL": f"sqlite:///{database}",
        # The server-less broker's file goes here too, not into the repository's var/.
        "DEMO_VAR_DIR": str(var_dir),
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
    # With a broker nobody listens on: importing the project creates the Celery
    # app, which connects to nothing, so commands work without a broker.
    env = {**demo_env, "CELERY_BROKER_URL": "redis://127.0.0.1:9/0"}
    out = _ok(_manage(env, "check"))
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
    # load_demo_data spreads its ~50 rows over the last 8 days, one every 4
    # hours ending now: each whole day before today holds six. Today's count
    # depends on the hour (and on rows other tests add), so it is not pinned.
    *earlier, _today = shown["last_days"].values()
    assert earlier == [6] * 6


# Runs in the demo's shell: the live analytics feed and page, under ASGI (AsyncClient: the
# middleware in async mode, the views on request.adb_session) and under WSGI (Client: the
# views open their own asession_scope()), counted again with the ORM; then one more
# communication recorded through the front page's form, and the feed read again.
_LIVE_SCRIPT = r"""
import asyncio, json, re
from datetime import date, timezone
from django.conf import settings
from django.contrib.auth.models import User
from django.db.models import Count
from django.db.models.functions import TruncDate
from django.test import AsyncClient, Client
from project.communications.models import CommunicationMetrics as M

settings.ALLOWED_HOSTS.append("testserver")  # AsyncClient's Host header

def orm(days):
    per_day = {}
    rows = (M.objects.annotate(day=TruncDate("sent_at", tzinfo=timezone.utc))
            .filter(day__in=[date.fromisoformat(d) for d in days])
            .values_list("day", "status").annotate(n=Count("id")))
    for day, status, n in rows:
        per_day.setdefault(day.isoformat(), {})[status] = n
    return {
        "total": M.objects.count(),
        "by_status": dict(M.objects.values_list("status").annotate(n=Count("id"))),
        "by_channel": dict(M.objects.values_list("channel").annotate(n=Count("id"))),
        "days": {d: per_day.get(d, {}) for d in days},
    }

async def read_async():
    client = AsyncClient()
    feed, page = await client.get("/live/feed/"), await client.get("/live/")
    return feed, page

def read():
    feed, page = asyncio.run(read_async())
    sync_client = Client(SERVER_NAME="127.0.0.1")
    sync_feed, sync_page = sync_client.get("/live/feed/"), sync_client.get("/live/")
    data = feed.json()
    html = page.content.decode()
    return {
        "statuses": [feed.status_code, page.status_code, sync_feed.status_code,
                     sync_page.status_code],
        "feed": data,
        "sessions": [data["session"], sync_feed.json()["session"]],
        "same": {k: v for k, v in data.items() if k not in ("session", "generated_at")}
        == {k: v for k, v in sync_feed.json().items() if k not in ("session", "generated_at")},
        "page_total": re.search(r'id="live-total">(\d+)<', html).group(1),
        "page_session": re.search(r'id="served-by">([^<]+)<', html).group(1),
        "sync_page_session": re.search(r'id="served-by">([^<]+)<',
                                       sync_page.content.decode()).group(1),
        "orm": orm([d["day"] for d in data["days"]]),
    }

before = read()
user = User.objects.get(username="grace")
posted = Client(SERVER_NAME="127.0.0.1").post(
    "/", {"user": user.pk, "channel": "push", "message_type": "weekly_checkin", "status": "failed"})
after = read()
print(json.dumps({"before": before, "after": after, "posted": posted.status_code}))
"""


def _live_counts(feed: dict[str, Any]) -> dict[str, Any]:
    """The feed's figures as the ORM side counts them: zeros left out, days as dicts."""
    return {
        "total": feed["total"],
        "by_status": {k: v for k, v in feed["by_status"].items() if v},
        "by_channel": {k: v for k, v in feed["by_channel"].items() if v},
        "days": {d["day"]: {k: v for k, v in d["by_status"].items() if v} for d in feed["days"]},
    }


@pytest.fixture
def postgresql_demo_env(demo_env: dict[str, str]) -> Iterator[dict[str, str]]:
    """The demo on a PostgreSQL database of this test's own, migrated, with the demo data."""
    psycopg = pytest.importorskip("psycopg")
    host, port = _postgresql_or_skip()
    user = os.environ.get("PGUSER", "postgres")
    name = f"{os.environ.get('MINGUS_TEST_DB_PREFIX', '')}demo_live_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(
        host=host, port=port, user=user, dbname="postgres", autocommit=True
    ) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            env = {**demo_env, "DATABASE_URL": f"postgresql://{user}@{host}:{port}/{name}"}
            _ok(_manage(env, "migrate", "--no-input", "-v", "0"))
            _ok(_manage(env, "load_demo_data"))
            yield env
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_live_analytics_counts_match_the_orm_and_move(
    request: pytest.FixtureRequest, database: str
) -> None:
    fixture = "demo_env" if database == "sqlite" else "postgresql_demo_env"
    found = _shell_json(request.getfixturevalue(fixture), _LIVE_SCRIPT)
    assert isinstance(found, dict)
    before, after = found["before"], found["after"]
    assert found["posted"] == 302
    for read in (before, after):
        assert read["statuses"] == [200, 200, 200, 200]
        # Under ASGI the request's async session; under WSGI the view's own scope.
        assert read["sessions"] == ["request.adb_session", "asession_scope()"]
        assert [read["page_session"], read["sync_page_session"]] == read["sessions"]
        assert read["same"] is True
        assert _live_counts(read["feed"]) == read["orm"]
        assert int(read["page_total"]) == read["feed"]["total"] == read["orm"]["total"]
        assert len(read["feed"]["days"]) == 7
        assert [d["total"] for d in read["feed"]["days"]] == [
            sum(d["by_status"].values()) for d in read["feed"]["days"]
        ]
    # The communication recorded between the two reads, and nothing else.
    b, a = before["feed"], after["feed"]
    assert a["total"] == b["total"] + 1
    assert a["by_status"] == {**b["by_status"], "failed": b["by_status"]["failed"] + 1}
    assert a["by_channel"] == {**b["by_channel"], "push": b["by_channel"]["push"] + 1}
    assert a["last_hour"] == b["last_hour"] + 1
    today = a["days"][-1]
    earlier = {d["day"]: d["by_status"] for d in b["days"]}.get(today["day"])
    if earlier is not None:  # not across a UTC midnight between the two reads
        assert today["by_status"] == {**earlier, "failed": earlier["failed"] + 1}


# --- Celery ---------------------------------------------------------------------------


# Users who accept SMS, and one who does not (alan; other tests change ada's).
_SMS_USERS = """
from project.communications.models import CommunicationPreferences
sms_on = list(CommunicationPreferences.objects.filter(sms_enabled=True)
              .order_by("user__username").values_list("user_id", flat=True))
sms_off = CommunicationPreferences.objects.get(user__username="alan").user_id
"""

# Runs in the demo's shell: send_batch through apply() (in this process, as a
# worker would run it): all users or none.
_BATCH_SCRIPT = (
    _SMS_USERS
    + """
import json
from project.communications.models import CommunicationMetrics as M
from project.communications.tasks import send_batch
before = M.objects.count()
# One user has turned SMS off: the whole batch fails, the other's row is rolled back too.
failed = send_batch.apply(([sms_on[0], sms_off], "weekly_checkin"))
after_failed = M.objects.count()
done = send_batch.apply((sms_on[:2], "weekly_checkin"))
# The same message again (a redelivery): its idempotency keys add nothing.
again = send_batch.apply((sms_on[:2], "weekly_checkin"), task_id=done.id)
print(json.dumps({
    "failed": [failed.state, type(failed.result).__name__],
    "added_by_failed": after_failed - before,
    "done": done.state, "again": again.state, "same_rows": done.result == again.result,
    "added": M.objects.count() - after_failed,
    "keys": sorted(M.objects.filter(pk__in=done.result).values_list("idempotency_key", flat=True)),
    "task_id": done.id,
}))
"""
)


def test_send_batch_is_all_or_none(demo_env: dict[str, str]) -> None:
    found = _shell_json(demo_env, _BATCH_SCRIPT)
    assert isinstance(found, dict)
    assert found["failed"] == ["FAILURE", "SMSDisabled"]
    assert found["added_by_failed"] == 0
    assert (found["done"], found["again"], found["same_rows"]) == ("SUCCESS", "SUCCESS", True)
    assert found["added"] == 2
    assert all(key.startswith(f"batch-{found['task_id']}-") for key in found["keys"])


@contextmanager
def _demo_worker(env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """The demo's worker (``scripts/demo.sh worker``), stopped by its pid at the end."""
    with log.open("wb") as out:
        worker = subprocess.Popen(
            ["bash", str(REPO / "scripts" / "demo.sh"), "worker"],
            cwd=REPO,
            env={**env, "PY": sys.executable},
            stdout=out,
            stderr=subprocess.STDOUT,
            # Its own process group (whose id is its pid): the prefork children
            # can be found, and killed, if the worker does not stop them.
            start_new_session=True,
        )
    try:
        yield worker
    finally:
        worker.send_signal(signal.SIGTERM)  # a warm shutdown
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(timeout=10)
        with suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGKILL)  # any child left behind


# Runs in the demo's shell while a worker runs: POST the "send SMS" form (the
# view publishes with apply_async_on_commit), and publish one task twice under
# the same id, as a broker redelivers a message.
_ENQUEUE_SCRIPT = (
    _SMS_USERS
    + """
import json, re, uuid
from django.test import Client
from project.communications.tasks import send_sms
client = Client(enforce_csrf_checks=True, SERVER_NAME="127.0.0.1")
client.get("/")
token = client.cookies["csrftoken"].value
refused = client.post("/send-sms/", {"csrfmiddlewaretoken": token, "sms-user": sms_off,
                                     "sms-message_type": "payday_summary"})
posted = client.post("/send-sms/", {"csrfmiddlewaretoken": token, "sms-user": sms_on[0],
                                    "sms-message_type": "payday_summary"})
flash = re.search(r"as task ([0-9a-f-]{36})", client.get("/").content.decode())
twice = str(uuid.uuid4())
for _ in range(2):
    send_sms.apply_async((sms_on[-1], "savings_milestone"), task_id=twice)
print(json.dumps({"refused": refused.status_code, "posted": posted.status_code,
                  "task": flash and flash.group(1), "twice": twice}))
"""
)


def _rows(database: Path, keys: list[str]) -> list[tuple[str, str, str]]:
    """``(idempotency_key, message_type, status)`` of the rows with these keys."""
    with closing(sqlite3.connect(database, timeout=10)) as db:
        marks = ", ".join("?" * len(keys))
        return db.execute(
            "SELECT idempotency_key, message_type, status FROM communications_communicationmetrics"
            f" WHERE idempotency_key IN ({marks}) ORDER BY idempotency_key",
            keys,
        ).fetchall()


def _send_sms_through_a_worker(env: dict[str, str], log: Path) -> None:
    """Start the worker, enqueue, and wait (30 s at most) for what it must write."""
    database = Path(env["DATABASE_URL"].removeprefix("sqlite:///"))
    with _demo_worker(env, log) as worker:
        # Enqueue once the worker is ready, as scripts/demo.sh starts the server:
        # on the server-less broker, a worker and a publisher declaring the
        # queue at the same moment race on its row, and the worker stops.
        deadline = time.monotonic() + 30
        while " ready." not in log.read_text() and time.monotonic() < deadline:
            assert worker.poll() is None, log.read_text()
            time.sleep(0.2)
        assert " ready." in log.read_text(), log.read_text()
        queued = _shell_json(env, _ENQUEUE_SCRIPT)
        assert isinstance(queued, dict)
        assert (queued["refused"], queued["posted"]) == (400, 302)
        assert queued["task"], "the page names the queued task"
        web_key, twice_key = f"sms-{queued['task']}", f"sms-{queued['twice']}"
        twice = f"communications.send_sms[{queued['twice']}] succeeded"
        expected = [
            (web_key, "payday_summary", "delivered"),
            (twice_key, "savings_milestone", "delivered"),
        ]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert worker.poll() is None, log.read_text()
            rows = _rows(database, [web_key, twice_key])
            if rows == sorted(expected) and log.read_text().count(twice) == 2:
                break
            time.sleep(0.3)
        else:
            pytest.fail(f"rows {_rows(database, [web_key, twice_key])}\n{log.read_text()}")
    output = log.read_text()
    # The message delivered twice ran twice (often at the same time, in the two
    # prefork children): one run wrote the row, the other found it by its key.
    runs = re.findall(re.escape(twice) + r" in [\d.e-]+s: (.*)", output)
    assert sorted("'created': True" in run for run in runs) == [False, True], runs
    assert "Traceback" not in output
    assert worker.returncode == 0, output


def test_worker_sends_sms_on_the_serverless_broker(
    demo_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**demo_env, "DEMO_VAR_DIR": str(tmp_path)}
    _send_sms_through_a_worker(env, tmp_path / "celery-worker.log")
    assert (tmp_path / "celery-broker.sqlite3").exists()
    assert "sqla+sqlite:///" in (tmp_path / "celery-worker.log").read_text()


REDIS_URL = "redis://127.0.0.1:6379/6"


def _redis() -> Any:
    try:
        import redis
    except ImportError:
        pytest.skip("the redis client is not installed")
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1, socket_timeout=5)
    try:
        client.ping()
    except redis.RedisError:
        if os.environ.get("CI"):
            pytest.fail("Redis at 127.0.0.1:6379 is not reachable (required in CI)")
        pytest.skip("Redis at 127.0.0.1:6379 is not reachable")
    return client


def test_worker_sends_sms_through_redis(demo_env: dict[str, str], tmp_path: Path) -> None:
    client = _redis()
    # A queue of this test's own: another run on the same Redis cannot take its messages.
    queue = f"mingus-demo-test-{uuid.uuid4().hex}"
    env = {**demo_env, "CELERY_BROKER_URL": REDIS_URL, "CELERY_TASK_DEFAULT_QUEUE": queue}
    try:
        _send_sms_through_a_worker(env, tmp_path / "celery-worker.log")
    finally:
        # The queue's bindings (kombu keeps them by exchange, named like the queue).
        client.delete(queue, f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}")
    assert "redis://" in (tmp_path / "celery-worker.log").read_text()


_ENDPOINTS_SCRIPT = """
import json
from django.test import Client
client = Client(SERVER_NAME="127.0.0.1")
health = client.get("/health/database")
ht = client.get("/ht/", HTTP_ACCEPT="application/json")
metrics = client.get("/metrics/database")
print(json.dumps({
    "health": [health.status_code, health.json()["status"],
               sorted(health.json()["connection_pools"])],
    "ht": ht.status_code,
    "metrics_anonymous": metrics.status_code,
}))
"""


def test_demo_mounts_the_operator_endpoints(demo_env: dict[str, str]) -> None:
    """The demo serves the health endpoint, django-health-check's page and guarded metrics."""
    found = _shell_json(demo_env, _ENDPOINTS_SCRIPT)
    assert isinstance(found, dict)
    assert found["health"] == [200, "healthy", ["analytics", "celery", "main"]]
    assert found["ht"] == 200
    assert found["metrics_anonymous"] == 401


# --- The fleet: the worker next to the web process -------------------------------------


def _process_group(leader: int) -> set[int]:
    """The pids of the process group ``leader`` leads (the worker and its prefork children)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with suppress(OSError):
            # pid (comm) state ppid pgrp ...: comm may hold spaces, so split after ")".
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == leader:
                found.add(int(stat.parent.name))
    return found


def test_worker_joins_the_fleet_that_pool_status_shows(
    demo_env: dict[str, str], tmp_path: Path
) -> None:
    """An idle demo worker is listed by ``pool_status`` (the fleet view) from its start.

    The web process and the worker share the demo's file-based cache in
    ``DEMO_VAR_DIR``; each prefork child starts its sampler as it starts, not at
    its first task, so the worker is in the fleet before it has run anything.
    """
    env = {**demo_env, "DEMO_VAR_DIR": str(tmp_path)}
    log = tmp_path / "celery-worker.log"
    with _demo_worker(env, log) as worker:
        deadline = time.monotonic() + 60
        listed: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            assert worker.poll() is None, log.read_text()
            status = _manage(env, "pool_status", "--json")
            assert status.returncode == 0, status.stdout + status.stderr
            processes = json.loads(status.stdout)["processes"]
            group = _process_group(worker.pid)
            listed = [p for p in processes if p["pid"] in group]
            if listed:
                break
            time.sleep(1)
        else:
            pytest.fail(f"the worker (group {worker.pid}) is not in the fleet\n{log.read_text()}")
        assert {p["role"] for p in listed} == {"worker"}
        assert "celery" in listed[0]["pools"]
        # The text view (the default) lists the same process in its fleet rows.
        text = _ok(_manage(env, "pool_status"))
        rows = [line.split() for line in text.splitlines()]
        assert any(row[1:3] == [str(listed[0]["pid"]), "worker"] for row in rows if row), text
    assert "Traceback" not in log.read_text()


# --- make demo: what it checks before it starts, and where it serves --------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _demo_script(
    env: dict[str, str], *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``scripts/demo.sh`` as ``make demo`` runs it, to the end (it must stop by itself)."""
    return subprocess.run(
        ["bash", str(REPO / "scripts" / "demo.sh"), *args],
        cwd=REPO,
        env={**env, "PY": sys.executable},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _one_line_refusal(result: subprocess.CompletedProcess[str]) -> str:
    """The one line a refused ``make demo`` prints; nothing was started or served."""
    assert result.returncode == 1, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("make demo: ")
    assert "Traceback" not in result.stdout + result.stderr
    # Refused before migrate, before the worker, before "Serving ...".
    assert result.stdout == ""
    return lines[0]


def test_busy_port_is_one_line_before_anything_starts(
    demo_env: dict[str, str], tmp_path: Path
) -> None:
    port = _free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        env = {**demo_env, "DEMO_VAR_DIR": str(tmp_path), "DEMO_HOST": f"127.0.0.1:{port}"}
        line = _one_line_refusal(_demo_script(env))
    assert f"127.0.0.1:{port} is already in use" in line
    assert f"DEMO_HOST=127.0.0.1:{port + 1}" in line  # what to do instead
    assert not (tmp_path / "celery-worker.log").exists()


def test_an_unknown_demo_server_is_one_line(demo_env: dict[str, str], tmp_path: Path) -> None:
    env = {**demo_env, "DEMO_VAR_DIR": str(tmp_path), "DEMO_SERVER": "gunicorn"}
    line = _one_line_refusal(_demo_script(env))
    assert line == (
        "make demo: DEMO_SERVER='gunicorn' is not one of runserver, uvicorn; "
        "use e.g. make demo DEMO_SERVER=uvicorn"
    )
    assert not (tmp_path / "celery-worker.log").exists()


@pytest.mark.parametrize(
    ("database_url", "expected"),
    [
        # Nothing listens on port 1: refused at once, whatever the machine.
        (
            "postgresql://postgres:not-shown@127.0.0.1:1/demo",
            "cannot connect to DATABASE_URL (postgresql://postgres:***@127.0.0.1:1/demo): "
            'connection failed: connection to server at "127.0.0.1", port 1 failed: '
            "Connection refused; start that server or fix DATABASE_URL",
        ),
        ("mongodb://127.0.0.1/demo", "DATABASE_URL uses 'mongodb'"),
    ],
)
def test_a_database_the_demo_cannot_use_is_one_line(
    demo_env: dict[str, str], tmp_path: Path, database_url: str, expected: str
) -> None:
    env = {**demo_env, "DEMO_VAR_DIR": str(tmp_path), "DATABASE_URL": database_url}
    line = _one_line_refusal(_demo_script(env))
    assert expected in line
    assert "not-shown" not in line


def _preflight(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "project.preflight"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_preflight_prints_the_url_of_demo_host(demo_env: dict[str, str]) -> None:
    port = _free_port()
    found = {}
    for host, url in [
        (f"127.0.0.1:{port}", f"http://127.0.0.1:{port}/"),
        (str(port), f"http://127.0.0.1:{port}/"),  # a port alone, as runserver takes it
        (f"localhost:{port}", f"http://localhost:{port}/"),
        # Every interface: the browser on this machine goes through loopback.
        (f"0.0.0.0:{port}", f"http://127.0.0.1:{port}/"),
    ]:
        result = _preflight({**demo_env, "DEMO_HOST": host})
        assert result.returncode == 0, result.stderr
        found[host] = result.stdout.strip()
        assert found[host] == url, (host, result.stdout, result.stderr)
    bad = _preflight({**demo_env, "DEMO_HOST": "127.0.0.1:http"})
    assert bad.returncode == 1
    assert bad.stderr.strip() == (
        "make demo: DEMO_HOST='127.0.0.1:http' is not host:port; "
        "use e.g. make demo DEMO_HOST=127.0.0.1:8080"
    )


def _wait_for_text(path: Path, text: str, seconds: float, process: subprocess.Popen[Any]) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = path.read_text() if path.exists() else ""
        if text in found:
            return found
        assert process.poll() is None, found
        time.sleep(0.2)
    pytest.fail(f"{text!r} not printed within {seconds} s:\n{path.read_text()}")


def _interruptible() -> None:
    """In the child: SIGINT as a terminal delivers it (a shell running pytest in the
    background may have left it ignored, and an ignored signal stays so across exec)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@contextmanager
def _make_demo(env: dict[str, str], out: Path) -> Iterator[subprocess.Popen[bytes]]:
    """All of ``scripts/demo.sh`` (server and worker), stopped as Ctrl-C stops it: SIGINT
    to its process group; whatever is left of the group after 30 s is killed."""
    with out.open("wb") as sink:
        demo = subprocess.Popen(
            ["bash", str(REPO / "scripts" / "demo.sh")],
            cwd=REPO,
            env={**env, "PY": sys.executable},
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_interruptible,
        )
    try:
        yield demo
    finally:
        with suppress(ProcessLookupError):
            os.killpg(demo.pid, signal.SIGINT)
        try:
            demo.wait(timeout=30)
        except subprocess.TimeoutExpired:
            demo.kill()
            demo.wait(timeout=10)
        with suppress(ProcessLookupError):
            os.killpg(demo.pid, signal.SIGKILL)  # anything left of the group


def _get(url: str, timeout: float = 10) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def _post(url: str, data: dict[str, str], timeout: float = 10) -> tuple[int, str]:
    body = urllib.parse.urlencode(data).encode()
    try:
        with urllib.request.urlopen(url, data=body, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def _feed(base: str) -> dict[str, Any]:
    status, body = _get(base + "/live/feed/")
    assert status == 200, body
    feed = json.loads(body)
    assert isinstance(feed, dict)
    return feed


@pytest.mark.parametrize(
    ("server", "session", "serving"),
    [
        ("runserver", "asession_scope()", "Serving the demo at"),
        ("uvicorn", "request.adb_session", "Serving the demo under uvicorn (ASGI) at"),
    ],
    ids=["runserver", "uvicorn"],
)
def test_make_demo_serves_the_live_analytics(
    demo_env: dict[str, str], tmp_path: Path, server: str, session: str, serving: str
) -> None:
    """make demo serves at DEMO_HOST (runserver, or uvicorn when asked): the front page, the
    live analytics moving with a new communication, static files; Ctrl-C stops both."""
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **demo_env,
        "DEMO_VAR_DIR": str(tmp_path),
        "DEMO_HOST": f"127.0.0.1:{port}",
        "DEMO_SERVER": server,
    }
    out = tmp_path / "make-demo.out"
    with _make_demo(env, out) as demo:
        printed = _wait_for_text(out, "Serving the demo", 120, demo)
        # Where DEMO_HOST says, and nowhere else; the demo admin's URL is there too.
        serving_lines = [line for line in printed.splitlines() if line.startswith("Serving")]
        assert serving_lines == [f"{serving} {base}/ (Ctrl-C stops the server and the worker)."]
        assert f"URL:      {base}/admin/" in printed
        deadline = time.monotonic() + 30
        while True:
            try:
                before = _feed(base)
                break
            except OSError:
                assert time.monotonic() < deadline, out.read_text()
                assert demo.poll() is None, out.read_text()
                time.sleep(0.3)
        # One communication through the demo's own API (an email, sent, now).
        status, body = _post(base + "/load/sa/communications", {"key": uuid.uuid4().hex})
        assert status == 201, body
        after = _feed(base)
        status, page = _get(base + "/live/")
        front_status, front = _get(base + "/")
        # The admin's stylesheet: served under uvicorn too (DEBUG), as runserver does.
        static, _ = _get(base + "/static/admin/css/base.css")
    assert before["session"] == after["session"] == session
    assert after["total"] == before["total"] + 1
    assert after["by_channel"] == {
        **before["by_channel"],
        "email": before["by_channel"]["email"] + 1,
    }
    assert after["by_status"] == {**before["by_status"], "sent": before["by_status"]["sent"] + 1}
    assert after["last_hour"] == before["last_hour"] + 1
    assert status == 200
    assert f'id="live-total">{after["total"]}<' in page
    assert f'id="served-by">{session}<' in page
    assert front_status == 200
    assert 'href="/admin/mingus_sessions/connectionpool/"' in front
    assert static == 200
    output = out.read_text()
    assert "Traceback" not in output
    assert "Stopping the Celery worker" in output
    assert "did not stop" not in output
    assert demo.returncode == 130, output


_LINKS_SCRIPT = """
import json, re
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
client = Client(SERVER_NAME="127.0.0.1")
links = re.findall(r'href="([^"]+)"', client.get("/").content.decode())
dashboard = reverse("admin:mingus_sessions_connectionpool_changelist")
anonymous = {url: client.get(url).status_code for url in links}
admin, _ = User.objects.get_or_create(username="links-admin", is_staff=True, is_superuser=True)
client.force_login(admin)
print(json.dumps({"links": links, "dashboard": dashboard, "anonymous": anonymous,
                  "staff": {url: client.get(url).status_code for url in links}}))
"""


def test_front_page_links_the_operator_surfaces(demo_env: dict[str, str]) -> None:
    found = _shell_json(demo_env, _LINKS_SCRIPT)
    assert isinstance(found, dict)
    dashboard = found["dashboard"]
    assert dashboard == "/admin/mingus_sessions/connectionpool/"
    operator = [dashboard, "/health/database", "/metrics/database/prometheus"]
    assert set(operator) <= set(found["links"])
    # Each one answers: the health check to anyone, the other two to staff only.
    assert found["anonymous"]["/health/database"] == 200
    assert found["anonymous"]["/metrics/database/prometheus"] == 401
    assert found["anonymous"][dashboard] == 302  # to the admin's login
    assert [found["staff"][url] for url in operator] == [200, 200, 200]


# --- A database outage while the demo serves --------------------------------------------


class _Outage:
    """A TCP relay to PostgreSQL that the test can cut (every connection, and the port).

    The demo connects through it: ``cut()`` is the database going away (open
    connections reset, new ones refused), ``restore()`` is it coming back on the
    same port.
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = _free_port()
        self.lock = threading.Lock()
        self.sockets: list[socket.socket] = []
        self.listener: socket.socket | None = None

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        with self.lock:
            listener, self.listener = self.listener, None
            sockets, self.sockets = self.sockets, []
        if listener is not None:
            with suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        for sock in sockets:
            with suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()  # a reset, as a server that went away

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self.lock:
                if self.listener is not listener:
                    client.close()
                    server.close()
                    return
                self.sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


def _postgresql_or_skip() -> tuple[str, int]:
    target = (os.environ.get("PGHOST", "127.0.0.1"), int(os.environ.get("PGPORT", "5432")))
    try:
        socket.create_connection(target, timeout=2).close()
    except OSError:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL at {target} is not reachable (required in CI)")
        pytest.skip(f"PostgreSQL at {target} is not reachable")
    return target


@pytest.fixture
def outage(tmp_path: Path) -> Iterator[tuple[_Outage, str]]:
    """A database of this test's own on the local PostgreSQL, reached through a relay."""
    psycopg = pytest.importorskip("psycopg")
    target = _postgresql_or_skip()
    user = os.environ.get("PGUSER", "postgres")
    name = f"{os.environ.get('MINGUS_TEST_DB_PREFIX', '')}demo_outage_{uuid.uuid4().hex[:12]}"
    admin = psycopg.connect(
        host=target[0], port=target[1], user=user, dbname="postgres", autocommit=True
    )
    relay = _Outage(target)
    relay.restore()
    try:
        admin.execute(f'CREATE DATABASE "{name}"')
        yield relay, f"postgresql://{user}@127.0.0.1:{relay.port}/{name}"
    finally:
        relay.cut()
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


#: The demo's pages, and the health check, that must answer 503 while the database is away.
_OUTAGE_PAGES = [
    "/",
    "/preferences/",
    "/preferences/ada/",
    "/analytics/",
    "/live/",
    "/live/feed/",
    "/health/database",
]


def test_pages_answer_503_during_a_database_outage(
    demo_env: dict[str, str], tmp_path: Path, outage: tuple[_Outage, str]
) -> None:
    relay, database_url = outage
    env = {
        **demo_env,
        "DATABASE_URL": database_url,
        "DEMO_VAR_DIR": str(tmp_path),
        # The breaker tries the database again a second after it opened, not a minute.
        "DEMO_BREAKER_RECOVERY_TIMEOUT": "1",
    }
    _ok(_manage(env, "migrate", "--no-input", "-v", "0"))
    _ok(_manage(env, "load_demo_data"))
    port = _free_port()
    log = tmp_path / "runserver.log"
    with log.open("wb") as sink:
        # What scripts/demo.sh serves with (DJANGO_DEBUG on: Django's debug page for a 500).
        server = subprocess.Popen(
            [sys.executable, str(MANAGE), "runserver", "--noreload", f"127.0.0.1:{port}"],
            cwd=REPO,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"

    def statuses() -> dict[str, int]:
        return {page: _get(base + page)[0] for page in _OUTAGE_PAGES}

    def until(expected: dict[str, int], seconds: float) -> dict[str, int]:
        deadline = time.monotonic() + seconds
        found: dict[str, int] = {}
        while time.monotonic() < deadline:
            assert server.poll() is None, log.read_text()
            with suppress(OSError):
                found = statuses()
                if found == expected:
                    return found
            time.sleep(0.5)
        pytest.fail(f"{found} != {expected} after {seconds} s\n{log.read_text()[-3000:]}")

    healthy = {page: 200 for page in _OUTAGE_PAGES}
    try:
        until(healthy, 60)
        relay.cut()
        assert until({page: 503 for page in _OUTAGE_PAGES}, 30)
        status, page = _get(base + "/preferences/ada/")
        assert status == 503
        assert "The database is unavailable" in page
        assert "Traceback" not in page  # not Django's debug page
        relay.restore()
        until(healthy, 60)
    finally:
        with suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)


# --- bootstrap.sh: a virtual environment of the wrong Python ----------------------------


def _bootstrap(venv: Path, python: str) -> subprocess.CompletedProcess[str]:
    """``scripts/bootstrap.sh`` up to a sound venv (``BOOTSTRAP_VENV_ONLY``: no pip)."""
    return subprocess.run(
        ["bash", str(REPO / "scripts" / "bootstrap.sh")],
        cwd=REPO,
        env={**os.environ, "PYTHON": python, "VENV": str(venv), "BOOTSTRAP_VENV_ONLY": "1"},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def _fake_python(path: Path, version: str) -> None:
    """An executable that answers any question with ``version``, as an old Python would."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\necho {version}\n")
    path.chmod(0o755)


_THIS_PYTHON = "{}.{}".format(*sys.version_info[:2])


@pytest.mark.parametrize(
    ("broken", "problem"),
    [
        ("vanished", "its Python does not run"),
        ("old", "it was built with Python 3.9, not"),
    ],
)
def test_bootstrap_rebuilds_a_venv_of_the_wrong_python(
    tmp_path: Path, broken: str, problem: str
) -> None:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text("home = /nowhere\n")
    if broken == "vanished":
        # The interpreter it was built with is gone (a pyenv or distribution upgrade).
        (venv / "bin" / "python").symlink_to("/nowhere/bin/python3.11")
    else:
        _fake_python(venv / "bin" / "python", "3.9")
    (venv / "stale").write_text("from the old build")

    result = _bootstrap(venv, sys.executable)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"bootstrap: rebuilding {venv}: {problem}" in result.stdout
    assert not (venv / "stale").exists()
    rebuilt = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert rebuilt.stdout.strip() == _THIS_PYTHON

    again = _bootstrap(venv, sys.executable)  # sound now: kept as it is
    assert again.returncode == 0, again.stderr
    assert "rebuilding" not in again.stdout


def test_bootstrap_leaves_what_is_not_a_venv_and_says_make_clean(tmp_path: Path) -> None:
    venv = tmp_path / "not-a-venv"
    _fake_python(venv / "bin" / "python", "3.9")
    result = _bootstrap(venv, sys.executable)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"bootstrap: {venv} is not a usable virtual environment (it was built with Python 3.9, "
        f"not {sys.executable} (Python {_THIS_PYTHON})) and not one this script may delete; "
        "run make clean, then try again"
    ]
    assert (venv / "bin" / "python").exists()


def test_bootstrap_refuses_a_python_older_than_supported(tmp_path: Path) -> None:
    old = tmp_path / "python3.10"
    _fake_python(old, "3.10")
    result = _bootstrap(tmp_path / "venv", str(old))
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"bootstrap: {old} is Python 3.10; mingus_sessions needs 3.11 or newer, "
        "e.g. make demo PYTHON=python3.12"
    )
    assert not (tmp_path / "venv").exists()
