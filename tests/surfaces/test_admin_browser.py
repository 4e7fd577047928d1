"""The "Connection pools" dashboard in a real headless browser (Debian's Chromium, Playwright).

A live server (pytest-django's ``live_server``) serves the admin while pools
carry real traffic from several threads (PostgreSQL when
``MINGUS_TEST_DATABASE=postgresql``). The browser logs in through the admin
login form, opens the dashboard, checks what it renders, resets a pool's
metrics through its form, reads the success message, and opens a pool's page.
The dashboard's screenshot goes to ``test-artifacts/admin-dashboard.png``, the
pool page's to ``test-artifacts/admin-pool.png``; with ``MINGUS_UPDATE_DOCS_SCREENSHOT=1``
the dashboard's also replaces ``docs/images/admin-dashboard.png`` (never by default,
so that a test run leaves the tracked files alone). The themes, the refresh, the
values on hover and the process pages are in ``test_admin_browser_live.py``; what
both files share (and when they are skipped) is in ``browser.py``.
"""

from __future__ import annotations

import copy
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.contrib.admin.models import LogEntry
from sqlalchemy import text

from mingus_sessions import monitor, session_scope
from mingus_sessions.metrics import get_pool_metrics, start_monitoring, stop_monitoring
from tests.surfaces.browser import (
    BACKEND,
    ROOT,
    launch,
    log_in,
    operator,
    require_browser,
    static_url,  # noqa: F401 - a fixture
    traffic,
)

SCREENSHOTS = [ROOT / "test-artifacts" / "admin-dashboard.png"]
if os.environ.get("MINGUS_UPDATE_DOCS_SCREENSHOT") == "1":
    SCREENSHOTS.append(ROOT / "docs" / "images" / "admin-dashboard.png")


@pytest.fixture(autouse=True)
def _no_sampler() -> Iterator[None]:
    stop_monitoring()
    yield
    stop_monitoring()


def walk_through(page: Any, dashboard: str) -> dict[str, Any]:
    """Sign in, read the dashboard, reset pool "other" by its form, open pool "main"."""
    found: dict[str, Any] = {}
    log_in(page, dashboard)

    found["title"] = page.title()
    found["heading"] = page.inner_text("#content h1")
    found["pool_links"] = page.locator("#pool-configuration tbody th a").all_inner_texts()
    found["fleet_rows"] = page.locator("#fleet-table tbody tr").count()
    found["fleet_text"] = page.inner_text("#fleet-table")
    found["charts"] = page.locator("svg.mingus-chart").count()
    found["lines"] = page.locator("svg.mingus-chart polyline").count()
    found["chart_title"] = page.locator("svg.mingus-chart > title").first.text_content()

    page.click('form[data-action="reset"][data-pool="other"] button')
    page.wait_for_url(dashboard)
    found["message"] = page.inner_text("ul.messagelist li.success")
    page.wait_for_timeout(300)  # two more samples, then reload so the charts are fresh
    page.reload()
    for path in SCREENSHOTS:
        path.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(path), full_page=True)

    page.click("#pool-configuration tbody th a >> text=main")
    page.wait_for_url(f"{dashboard}pool/main/")
    found["pool_heading"] = page.inner_text("#content h1")
    found["pool_charts"] = page.locator("svg.mingus-chart").count()
    found["slow_table"] = page.locator("#slow-queries-table").count()
    found["leaks"] = page.inner_text("#leak-summary")
    found["pool_buttons"] = page.locator("#pool-actions form button").all_inner_texts()
    page.screenshot(path=str(SCREENSHOTS[0].with_name("admin-pool.png")), full_page=True)
    return found


@pytest.mark.usefixtures("static_url")  # before live_server: see browser.static_url
@pytest.mark.django_db(transaction=True, databases=["default", "other"])
def test_dashboard_in_a_real_browser(live_server: Any, settings: Any) -> None:
    """Log in, see every pool, the fleet and charts, reset a pool through its form."""
    sync_api = require_browser()
    config = copy.deepcopy(django_settings.MINGUS_SESSIONS)
    config["POOLS"]["main"].update(POOL_SIZE=2, MAX_OVERFLOW=1)
    config.update(SLOW_QUERY_THRESHOLD=0.05, FLEET={"CACHE": "default", "INTERVAL": 0.2})
    settings.MINGUS_SESSIONS = config

    user = operator()
    assert start_monitoring(role="web") is True
    traffic(stop_after=1.5)
    if BACKEND == "postgresql":
        with session_scope("main") as session:  # one statement past the slow threshold
            session.execute(text("SELECT pg_sleep(0.06)"))
    time.sleep(0.5)  # a few more samples after the load
    assert len(monitor.get_time_series()["main"]) >= 5
    before = get_pool_metrics("other").checkouts
    assert before > 0

    dashboard = f"{live_server.url}/admin/mingus_sessions/connectionpool/"
    with sync_api.sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(15_000)
            # Nothing but the live server: the page must need no other host.
            outside: list[str] = []

            def only_local(route: Any) -> None:
                if route.request.url.startswith(live_server.url):
                    route.continue_()
                else:
                    outside.append(route.request.url)
                    route.abort()

            page.route("**/*", only_local)
            failed: list[str] = []
            page.on("response", lambda r: failed.append(r.url) if r.status >= 400 else None)
            found = walk_through(page, dashboard)
        finally:
            browser.close()

    assert "Connection pools" in found["title"]
    assert found["heading"] == "Connection pools"
    assert found["pool_links"] == ["main", "other"]
    assert found["fleet_rows"] >= 1
    assert "(this process)" in found["fleet_text"]
    assert "web" in found["fleet_text"]
    assert found["charts"] == 2
    assert found["lines"] >= 2
    assert found["chart_title"] == "Utilization over time"
    assert found["message"] == 'Reset the metrics of pool "other".'
    assert found["pool_heading"] == "Connection pool main"
    assert found["pool_charts"] == 2
    assert found["slow_table"] == 1
    assert "0 connections reported held past the leak threshold" in found["leaks"]
    assert found["pool_buttons"] == ["Reset metrics", "Dispose engine", "Reset circuit breaker"]
    assert not outside
    assert not failed  # the admin's stylesheets and images loaded too
    assert get_pool_metrics("other").checkouts == 0
    assert get_pool_metrics("main").checkouts > 0
    entry = LogEntry.objects.get(object_id="other")
    assert entry.user_id == user.pk
    for path in SCREENSHOTS:
        assert path.stat().st_size > 10_000
    assert threading.active_count() < 50
