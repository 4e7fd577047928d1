"""The debug-toolbar panel (``mingus_sessions.debug_toolbar.SQLAlchemyPanel``) in the real toolbar.

Every request goes through django-debug-toolbar's own middleware, its
stored stats are read back as the toolbar stores them, and the panel's
content is rendered by the toolbar's ``render_panel`` view, as the browser
asks for it. The toolbar's settings are in force for this module only (the
suite's settings do not install it).
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.db import connections
from django.test import AsyncClient, Client
from sqlalchemy import text

from mingus_sessions import get_engine, session_scope
from mingus_sessions._core.state import state
from mingus_sessions.debug_toolbar import recording
from mingus_sessions.debug_toolbar.listeners import start_listening
from tests.helpers import run_in_a_forked_child
from tests.surfaces import toolbar_urls
from tests.surfaces.toolbar_urls import listener_counts

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "other"])

PANEL = "SQLAlchemyPanel"


def show(request: Any) -> bool:
    """The toolbar's SHOW_TOOLBAR_CALLBACK here: on, unless the request says ``X-Toolbar: off``."""
    return bool(request.headers.get("X-Toolbar") != "off")


@pytest.fixture(autouse=True)
def toolbar(settings: Any) -> None:
    """The toolbar installed as its docs say, with Django's SQL panel and ours."""
    settings.INSTALLED_APPS = [
        *settings.INSTALLED_APPS,
        "django.contrib.staticfiles",
        "debug_toolbar",
    ]
    settings.MIDDLEWARE = ["debug_toolbar.middleware.DebugToolbarMiddleware", *settings.MIDDLEWARE]
    settings.DEBUG_TOOLBAR_PANELS = [
        "debug_toolbar.panels.sql.SQLPanel",
        "mingus_sessions.debug_toolbar.SQLAlchemyPanel",
    ]
    settings.DEBUG_TOOLBAR_CONFIG = {"SHOW_TOOLBAR_CALLBACK": f"{__name__}.show"}
    settings.ROOT_URLCONF = "tests.surfaces.toolbar_urls"


def _request(client: Client, url: str, **headers: str) -> tuple[str, str]:
    """GET ``url`` through the toolbar; the page and the toolbar's request id."""
    response = client.get(url, headers=headers)
    assert response.status_code == 200, response.content
    page = response.content.decode()
    found = re.search(r'data-request-id="(\w+)"', page)
    assert found is not None, "the toolbar was not inserted in the page"
    return page, found.group(1)


def _stats(request_id: str, panel: str = PANEL) -> dict[str, Any]:
    """The panel's stats as the toolbar stored them for that request."""
    from debug_toolbar.toolbar import DebugToolbar

    stored = DebugToolbar.fetch(request_id, panel)
    assert stored is not None
    stats: dict[str, Any] = stored.get_panel_by_id(panel).get_stats()
    return stats


def _rendered(client: Client, request_id: str) -> str:
    """The panel's content as the toolbar's render_panel view sends it to the browser."""
    response = client.get("/__debug__/render_panel/", {"request_id": request_id, "panel_id": PANEL})
    assert response.status_code == 200
    content: str = response.json()["content"]
    return content


def _listeners_in(page: str) -> list[int]:
    """The listener counts that the /listening/ view wrote in its page."""
    found = re.search(r"listeners=(\[[^]]*\])", page)
    assert found is not None, page[:200]
    counts: list[int] = json.loads(found.group(1))
    return counts


def _statements(stats: dict[str, Any], pool: str) -> list[str]:
    return [r["sql"] for r in stats["statements"] if r["pool"] == pool]


def test_statements_of_two_pools_with_durations(client: Client) -> None:
    """Each pool's statements, with a duration, their transactions, savepoints and checkouts."""
    page, request_id = _request(client, "/two-pools/")
    stats = _stats(request_id)

    assert "SELECT 4" in _statements(stats, "other")
    main = _statements(stats, "main")
    assert "SELECT 2" in main
    assert "SELECT 3" in main
    assert "SELECT 4" not in main
    assert all(r["duration_ms"] >= 0 and r["error"] is None for r in stats["statements"])
    assert stats["count"] == len(stats["statements"])
    assert stats["time_ms"] == pytest.approx(sum(r["duration_ms"] for r in stats["statements"]))
    assert {s["pool"]: s["statements"] for s in stats["pools"]} == {
        "main": len(main),
        "other": len(_statements(stats, "other")),
    }
    # Every statement ran in a transaction that committed: the request's scope
    # on "main" (the view's scopes are its savepoints) and the one on "other".
    by_pool = {t["pool"]: t for t in stats["transactions"]}
    assert {t["outcome"] for t in stats["transactions"]} == {"committed"}
    assert all(r["transaction"] is not None for r in stats["statements"])
    assert [s["outcome"] for s in by_pool["main"]["savepoints"]] == [
        "released",
        "released",
        "rolled back",
    ]
    assert by_pool["other"]["savepoints"] == []
    assert by_pool["main"]["where"]["function"] == "two_pools"
    assert by_pool["main"]["where"]["file"] == toolbar_urls.__file__
    # Each pool checked out one connection; MONITORING times its wait.
    assert sorted(c["pool"] for c in stats["checkouts"]) == ["main", "other"]
    assert all(c["wait_ms"] is not None and c["wait_ms"] >= 0 for c in stats["checkouts"])

    # The toolbar's own button, and the panel's content as the toolbar renders it.
    count = stats["count"]
    assert f"{count} statements in {stats['time_ms']:.2f}ms" in page
    content = _rendered(client, request_id)
    assert "SELECT 4" in content
    assert "<strong>other</strong>" in content
    assert "rolled back" in content
    assert f"{stats['statements'][0]['duration_ms']:.2f}ms" in content
    assert "Bound parameters are not shown: LOG_QUERY_PARAMETERS is off." in content


def test_parameters_never_shown_without_log_query_parameters(client: Client) -> None:
    """Without LOG_QUERY_PARAMETERS, no bound parameter is kept, stored or rendered."""
    page, request_id = _request(client, "/two-pools/")
    stats = _stats(request_id)
    assert stats["parameters"] is False
    assert all("parameters" not in r for r in stats["statements"])
    assert toolbar_urls.SECRET not in json.dumps(stats)
    assert toolbar_urls.SECRET not in page
    assert toolbar_urls.SECRET not in _rendered(client, request_id)


def test_parameters_shown_with_log_query_parameters(client: Client, settings: Any) -> None:
    """With LOG_QUERY_PARAMETERS on, each statement shows its bound parameters."""
    config = copy.deepcopy(django_settings.MINGUS_SESSIONS)
    config["LOG_QUERY_PARAMETERS"] = True
    settings.MINGUS_SESSIONS = config
    _page, request_id = _request(client, "/two-pools/")
    stats = _stats(request_id)
    assert stats["parameters"] is True
    marker = next(r for r in stats["statements"] if "AS marker" in r["sql"])
    assert toolbar_urls.SECRET in marker["parameters"]
    content = _rendered(client, request_id)
    assert toolbar_urls.SECRET in content
    assert "LOG_QUERY_PARAMETERS is off" not in content


def test_request_without_sqlalchemy_shows_none(client: Client) -> None:
    """A view that uses only the ORM: the panel shows no statement, Django's SQL panel its query."""
    page, request_id = _request(client, "/no-sqlalchemy/")
    stats = _stats(request_id)
    assert stats["count"] == 0
    assert stats["statements"] == stats["transactions"] == stats["checkouts"] == []
    assert "0 statements in 0.00ms" in page
    assert "No SQLAlchemy statement ran during this request." in _rendered(client, request_id)
    orm = _stats(request_id, "SQLPanel")["queries"]
    assert any("testapp_note" in q["sql"] for q in orm)


def test_joined_statements_are_in_this_panel_not_in_djangos(client: Client) -> None:
    """A joined scope's statements (Django's connection) show here, marked, not in the SQL panel."""
    _page, request_id = _request(client, "/joined/")
    stats = _stats(request_id)
    joined = [r for r in stats["statements"] if "joined-marker" in r["sql"]]
    assert len(joined) == 1
    assert joined[0]["joined"] is True
    assert joined[0]["pool"] == "main"
    # The scope is a savepoint in Django's transaction, which Django ends.
    (transaction,) = stats["transactions"]
    assert transaction["joined"] is True
    assert [s["outcome"] for s in transaction["savepoints"]] == ["released"]
    assert stats["checkouts"] == []  # Django's connection is borrowed, not checked out
    content = _rendered(client, request_id)
    assert "in Django's transaction" in content
    assert "main (joined, on Django's connection)" in content
    # Django's SQL panel wraps Django's cursors; SQLAlchemy opens its own on
    # the DB-API connection, so the panel sees the ORM's INSERT only.
    orm = [q["sql"] for q in _stats(request_id, "SQLPanel")["queries"]]
    assert any("orm-in-atomic" in sql for sql in orm)
    assert not any("joined-marker" in sql for sql in orm)


def test_failed_statement_shows_its_error(client: Client) -> None:
    """A failing statement is listed with its duration and error; its savepoint rolled back."""
    _page, request_id = _request(client, "/failing/")
    stats = _stats(request_id)
    (failed,) = [r for r in stats["statements"] if "no_such_table_for_the_toolbar" in r["sql"]]
    # The driver's own class: sqlite3's and MySQLdb's, psycopg's subclass of ProgrammingError.
    assert failed["error"] in {"OperationalError", "ProgrammingError", "UndefinedTable"}
    assert failed["duration_ms"] >= 0
    (transaction,) = stats["transactions"]
    assert [s["outcome"] for s in transaction["savepoints"]] == ["rolled back"]
    assert f"Failed: {failed['error']}" in _rendered(client, request_id)


def test_concurrent_requests_do_not_mix(settings: Any) -> None:
    """Two requests instrumented at once, statements interleaved: each panel shows only its own."""
    toolbar_urls.meeting = threading.Barrier(2)
    found: dict[str, str] = {}
    failures: list[BaseException] = []

    def serve(marker: str) -> None:
        try:
            found[marker] = _request(Client(), f"/concurrent/{marker}/")[1]
        except BaseException as exc:
            failures.append(exc)
            assert toolbar_urls.meeting is not None
            toolbar_urls.meeting.abort()
        finally:
            connections.close_all()

    threads = [threading.Thread(target=serve, args=(marker,)) for marker in ("left", "right")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    toolbar_urls.meeting = None
    assert not failures, failures
    for marker, other in (("left", "right"), ("right", "left")):
        sql = " ".join(_statements(_stats(found[marker]), "main"))
        assert f"'{marker}-first'" in sql
        assert f"'{marker}-second'" in sql
        assert other not in sql


def test_listeners_only_while_a_request_is_instrumented(client: Client) -> None:
    """The engines carry the panel's listeners during a toolbar request only, and the same after."""
    with session_scope() as session:  # the engines exist before the request
        session.execute(text("SELECT 1"))
    with session_scope(join_django=True) as session:
        session.execute(text("SELECT 1"))
    engines = [get_engine(), get_engine("other"), *state.joined_engines.values()]
    before = [listener_counts(engine) for engine in engines]
    had_events = [(engine._has_events, engine.dialect._has_events) for engine in engines]

    page, _ = _request(client, "/listening/")
    assert _listeners_in(page) == [n + 1 for n in before[0]]
    off = client.get("/listening/", headers={"X-Toolbar": "off"}).content.decode()
    assert _listeners_in(off) == before[0]

    assert [listener_counts(engine) for engine in engines] == before
    assert [(e._has_events, e.dialect._has_events) for e in engines] == had_events


def test_a_disabled_panel_adds_no_listener(client: Client) -> None:
    """The panel switched off in the toolbar (its cookie): no listener, no stats."""
    with session_scope() as session:
        session.execute(text("SELECT 1"))
    baseline = listener_counts(get_engine())
    client.cookies["djdt" + PANEL] = "off"
    page, request_id = _request(client, "/listening/")
    assert _listeners_in(page) == baseline
    from debug_toolbar.store import get_store

    assert not get_store().panel(request_id, PANEL)  # nothing recorded for the panel


def test_engines_built_during_the_request_are_recorded(client: Client) -> None:
    """A pool whose engine the request builds is listened to from its first statement."""
    assert state.pools == {}
    _page, request_id = _request(client, "/two-pools/")
    stats = _stats(request_id)
    assert "SELECT 2" in _statements(stats, "main")
    assert _statements(stats, "other")[-1] == "SELECT 4"
    assert {t["pool"]: t["statements"] for t in stats["transactions"]} == {
        "main": len(_statements(stats, "main")),
        "other": len(_statements(stats, "other")),
    }


def test_asgi_request_is_recorded() -> None:
    """Under ASGI the sync view runs in a thread that sees its request's recording."""

    async def scenario() -> tuple[str, str]:
        response = await AsyncClient().get("/two-pools/")
        assert response.status_code == 200
        page = response.content.decode()
        found = re.search(r'data-request-id="(\w+)"', page)
        assert found is not None
        return page, found.group(1)

    with session_scope() as session:
        session.execute(text("SELECT 1"))
    before = listener_counts(get_engine())
    _page, request_id = asyncio.run(scenario())
    stats = _stats(request_id)
    assert "SELECT 4" in _statements(stats, "other")
    assert "SELECT 2" in _statements(stats, "main")
    assert listener_counts(get_engine()) == before


def test_statements_past_the_limit_are_counted_not_listed(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past MAX_STATEMENTS a request's statements are counted and timed, not kept."""
    monkeypatch.setattr(recording, "MAX_STATEMENTS", 3)
    _page, request_id = _request(client, "/two-pools/")
    stats = _stats(request_id)
    assert len(stats["statements"]) == 3
    assert stats["dropped"] > 0
    assert stats["count"] == 3 + stats["dropped"]
    assert stats["time_ms"] > sum(r["duration_ms"] for r in stats["statements"])
    assert f"{stats['dropped']} more statements ran" in _rendered(client, request_id)


@pytest.mark.parametrize("event", ["settings_changed", "reset"])
def test_a_settings_change_or_reset_takes_the_listeners_off(event: str) -> None:
    """A settings change or a test's reset takes the panel's listeners off every engine at once."""
    with session_scope() as session:
        session.execute(text("SELECT 1"))
    engine = get_engine()
    before = listener_counts(engine)
    listeners = start_listening()
    assert listener_counts(engine) != before
    getattr(state, event)()
    assert state.panel_listeners is None
    assert listener_counts(engine) == before
    listeners.release()  # the request that was running ends as usual
    assert listener_counts(engine) == before


def test_a_forked_child_starts_without_the_listeners() -> None:
    """A child forked during an instrumented request has no listener and no recording user."""
    with session_scope() as session:
        session.execute(text("SELECT 1"))
    engine = get_engine()
    before = listener_counts(engine)
    listeners = start_listening()
    try:
        during = listener_counts(engine)
        reply = run_in_a_forked_child(
            lambda: json.dumps([listener_counts(engine), state.panel_listeners is None])
        )
    finally:
        listeners.release()
    assert during != before
    assert json.loads(reply) == [before, True]
    assert listener_counts(engine) == before


def test_the_demo_shows_the_panel_with_debug_on(tmp_path: Any) -> None:
    """The demo project turns the toolbar and this panel on with DEBUG, and off without it."""
    repo = Path(__file__).resolve().parents[2]
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'demo.sqlite3'}",
        "DEMO_VAR_DIR": str(tmp_path),
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "DJANGO_SECRET_KEY": "tests-only-not-secret",
    }
    manage = [sys.executable, str(repo / "manage.py")]
    migrate = subprocess.run(
        [*manage, "migrate", "-v", "0"], env=env, capture_output=True, text=True, timeout=120
    )
    assert migrate.returncode == 0, migrate.stderr
    probe = (
        "from django.test import Client; "
        "page = Client(HTTP_HOST='127.0.0.1').get('/').content.decode(); "
        "print('djdt-SQLAlchemyPanel' in page, 'statements in' in page)"
    )
    found = {}
    for debug in ("1", "0"):
        shell = subprocess.run(
            [*manage, "shell", "-v", "0", "-c", probe],
            env={**env, "DJANGO_DEBUG": debug},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert shell.returncode == 0, shell.stderr
        found[debug] = shell.stdout.split()
    assert found == {"1": ["True", "True"], "0": ["False", "False"]}
