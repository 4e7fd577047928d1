"""The admin's pages in a real browser: both themes, the refresh, values on hover, processes.

Debian's headless Chromium (Playwright, see ``browser.py``) against pytest-django's
live server, which runs in this process: so the pools, the breakers and the sampler
the test changes are the ones the pages read, and "this process" of the fleet is the
test's own. Colours are asserted with computed styles against Django admin's CSS
variables in the light theme, the dark theme chosen with the admin's toggle (stored
in ``localStorage``), and the dark theme that ``prefers-color-scheme`` picks; the
screenshots of each go to ``MINGUS_SCREENSHOT_DIR`` (a temporary directory by default).

A headless Chromium never hides a page (it keeps every tab visible), so the refresh
test switches ``document.visibilityState`` with a getter and fires the
``visibilitychange`` event, as a browser does when the tab goes to the background.
"""

from __future__ import annotations

import copy
import os
import re
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.contrib.admin.utils import quote
from sqlalchemy import text

from mingus_sessions import get_circuit_breaker, session_scope
from mingus_sessions.metrics import get_pool_metrics, start_monitoring, stop_monitoring
from tests.surfaces.browser import (
    DASHBOARD_PATH,
    launch,
    log_in,
    operator,
    require_browser,
    screenshot_dir,
    static_url,  # noqa: F401 - a fixture
    traffic,
)

pytestmark = [
    # static_url before live_server: see browser.static_url.
    pytest.mark.usefixtures("static_url"),
    pytest.mark.django_db(transaction=True, databases=["default", "other"]),
]

#: Theme name → (what the admin's theme toggle stored in localStorage, prefers-color-scheme).
THEMES = {
    "light": ("light", "light"),
    "dark": ("dark", "light"),
    "auto-dark": (None, "dark"),
}
VIEWPORT = {"width": 1280, "height": 900}
WHITE = "rgb(255, 255, 255)"
DARK_BODY_BG = "rgb(18, 18, 18)"  # dark_mode.css's --body-bg, #121212

#: The colours that the page's variables resolve to, and those that the first chart and the
#: first bar are drawn in. Selectors by structure, not by class, so that an SVG coloured by
#: its attributes alone is measured too.
PROBE_COLOURS = """() => {
    const probe = document.createElement('span');
    document.body.append(probe);
    const resolve = (value) => { probe.style.color = value; return getComputedStyle(probe).color; };
    const root = getComputedStyle(document.documentElement);
    const variable = (name) => resolve(root.getPropertyValue(name).trim());
    const style = (selector) => {
        const found = document.querySelector(selector);
        return found === null ? null : getComputedStyle(found);
    };
    const found = {
        theme: document.documentElement.dataset.theme,
        bodyBg: variable('--body-bg'),
        bodyFg: variable('--body-fg'),
        border: variable('--border-color'),
        hairline: variable('--hairline-color'),
        pageBg: getComputedStyle(document.body).backgroundColor,
        chartBg: style('svg.mingus-chart > rect')?.fill ?? null,
        chartText: style('svg.mingus-chart > text')?.fill ?? null,
        chartGrid: style('svg.mingus-chart > line[stroke="#dddddd"]')?.stroke ?? null,
        trackFill: style('svg.mingus-bar > rect:first-of-type')?.fill ?? null,
        trackStroke: style('svg.mingus-bar > rect:first-of-type')?.stroke ?? null,
        barFill: style('svg.mingus-bar > rect:last-of-type')?.fill ?? null,
    };
    probe.remove();
    return found;
}"""


@pytest.fixture(autouse=True)
def _no_sampler() -> Iterator[None]:
    stop_monitoring()
    yield
    stop_monitoring()


@pytest.fixture
def admin_site(live_server: Any, settings: Any) -> dict[str, str]:
    """A sampler every 0.2 s (so the pages refresh every second), an operator, some traffic.

    Returns the dashboard's URL and this process's page's URL.
    """
    config = copy.deepcopy(django_settings.MINGUS_SESSIONS)
    config["POOLS"]["main"].update(POOL_SIZE=2, MAX_OVERFLOW=1)
    config.update(FLEET={"CACHE": "default", "INTERVAL": 0.2})
    settings.MINGUS_SESSIONS = config
    operator()
    assert start_monitoring(role="web") is True
    traffic(stop_after=1.0)
    time.sleep(0.4)  # two more samples after the load
    dashboard = f"{live_server.url}{DASHBOARD_PATH}"
    process = f"{dashboard}process/{quote(socket.gethostname())}/{os.getpid()}/"
    return {"dashboard": dashboard, "process": process}


def signed_in_state(browser: Any, url: str) -> Any:
    """The cookies of a session signed in through the login form."""
    context = browser.new_context()
    try:
        log_in(context.new_page(), url)
        return context.storage_state()
    finally:
        context.close()


def test_pages_follow_the_light_and_dark_themes(
    admin_site: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """In each theme the charts' background, texts and grid and the bars' empty part take the
    admin's variables: the page's own background in dark mode, never a white box."""
    sync_api = require_browser()
    shots = screenshot_dir(tmp_path_factory)
    found: dict[tuple[str, str], dict[str, Any]] = {}
    with sync_api.sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            state = signed_in_state(browser, admin_site["dashboard"])
            for theme, (stored, scheme) in THEMES.items():
                context = browser.new_context(
                    storage_state=state, color_scheme=scheme, viewport=VIEWPORT
                )
                remember = f"'{stored}'" if stored else "null"
                context.add_init_script(
                    f"if ({remember}) localStorage.setItem('theme', {remember}); "
                    "else localStorage.removeItem('theme');"
                )
                page = context.new_page()
                page.set_default_timeout(15_000)
                for name in ("dashboard", "process"):
                    response = page.goto(admin_site[name])
                    assert response is not None
                    assert response.status == 200, name
                    page.wait_for_selector("svg.mingus-chart")
                    found[theme, name] = page.evaluate(PROBE_COLOURS)
                    page.screenshot(path=str(shots / f"{name}-{theme}.png"), full_page=True)
                context.close()
        finally:
            browser.close()

    for (theme, name), colours in found.items():
        where = f"{name} page, {theme} theme: {colours}"
        dark = theme != "light"
        assert colours["bodyBg"] == (DARK_BODY_BG if dark else WHITE), where
        assert colours["pageBg"] == colours["bodyBg"], where
        assert colours["chartBg"] == colours["bodyBg"], where  # no white box in dark mode
        assert colours["chartText"] == colours["bodyFg"], where
        assert colours["chartGrid"] == colours["hairline"], where
        assert colours["trackFill"] == colours["bodyBg"], where  # the empty part looks empty
        assert colours["trackStroke"] == colours["border"], where
        assert colours["barFill"] not in (colours["bodyBg"], None), where
    assert found["dark", "dashboard"]["theme"] == "dark"
    assert found["auto-dark", "dashboard"]["theme"] == "auto"
    for theme in THEMES:
        for name in ("dashboard", "process"):
            assert (shots / f"{name}-{theme}.png").stat().st_size > 10_000


def test_a_chart_point_shows_its_value_on_hover(admin_site: dict[str, str]) -> None:
    """The point under the pointer appears and its title gives the line, value and time."""
    sync_api = require_browser()
    with sync_api.sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.set_default_timeout(15_000)
            log_in(page, admin_site["dashboard"])
            points = page.locator("#mingus-all-utilization .mingus-points").first.locator("circle")
            count = points.count()
            middle = points.nth(count // 2)
            hidden_before = middle.evaluate("p => getComputedStyle(p).fillOpacity")
            aimed_at = middle.evaluate("p => p.querySelector('title').textContent")
            middle.hover(force=True)  # the points overlap: the one on top takes the pointer
            hovered = page.evaluate(
                """() => [...document.querySelectorAll('.mingus-point:hover')].map(p => ({
                    title: p.querySelector('title').textContent,
                    opacity: getComputedStyle(p).fillOpacity,
                }))"""
            )
            titles = points.evaluate_all("ps => ps.map(p => p.querySelector('title').textContent)")
        finally:
            browser.close()
    assert count >= 5  # one per sample
    assert hidden_before == "0"
    assert len(hovered) == 1
    assert hovered[0]["opacity"] == "1"
    # The pointer is on that sample of one line or the other (both are drawn there).
    matched = re.fullmatch(r"(main|other): \d+ % at (\d\d:\d\d:\d\d UTC)", hovered[0]["title"])
    assert matched is not None
    assert aimed_at.endswith(f" at {matched.group(2)}")
    assert all(re.fullmatch(r"main: \d+ % at \d\d:\d\d:\d\d UTC", t) for t in titles)


#: Before the page's scripts: count the timers pending, and let the test hide the tab.
INSTRUMENT = """(() => {
    const pending = new Set();
    const set = window.setTimeout.bind(window);
    const clear = window.clearTimeout.bind(window);
    window.setTimeout = (callback, delay, ...rest) => {
        const id = set((...args) => { pending.delete(id); callback(...args); }, delay, ...rest);
        pending.add(id);
        return id;
    };
    window.clearTimeout = (id) => { pending.delete(id); clear(id); };
    window.mingusPendingTimers = () => pending.size;
    let hidden = false;
    Object.defineProperty(document, 'visibilityState', {get: () => hidden ? 'hidden' : 'visible'});
    Object.defineProperty(document, 'hidden', {get: () => hidden});
    window.mingusSetHidden = (value) => {
        hidden = value;
        document.dispatchEvent(new Event('visibilitychange'));
    };
})();"""

STATUS = "document.getElementById('mingus-refresh-status').textContent"

#: The figures of one pool's row in a table: its cells' texts, by the pool's name.
ROW_TEXT = """([table, pool]) => {
    for (const row of document.querySelectorAll(`#${table} tbody tr`)) {
        const name = row.querySelector('th[scope=row]');
        if (name !== null && name.textContent.trim() === pool) {
            return [...row.querySelectorAll('td')].map(cell => cell.textContent.trim());
        }
    }
    return null;
}"""


def dom_counters(page: Any, session: Any) -> dict[str, int]:
    """Documents, detached nodes, listeners and timers, with the tab hidden and after a full
    garbage collection (hidden, so that no refresh is half done when they are counted)."""
    running_timers = page.evaluate("mingusPendingTimers()")
    page.evaluate("mingusSetHidden(true)")
    session.send("HeapProfiler.collectGarbage")
    counters = session.send("Memory.getDOMCounters")
    in_document = page.evaluate(
        """() => {
            const walker = document.createTreeWalker(document, NodeFilter.SHOW_ALL);
            let count = 1;
            while (walker.nextNode()) count += 1;
            return count;
        }"""
    )
    found = {
        "running_timers": running_timers,
        "documents": counters["documents"],
        "detached": counters["nodes"] - in_document,
        "listeners": counters["jsEventListeners"],
        "timers": page.evaluate("mingusPendingTimers()"),
    }
    page.evaluate("mingusSetHidden(false)")
    return found


def see_new_figures(page: Any) -> dict[str, Any]:
    """Change the server's figures (three checkouts, an open breaker) and wait for the page
    to show them; what the page kept of its state (a script's value, an element, the focus,
    the scroll position) meanwhile."""
    page.evaluate(
        """() => {
            window.mingusMarker = 'the same page';
            window.mingusActions = document.getElementById('pool-actions');
            document.getElementById('mingus-refresh-toggle').focus();
            document.getElementById('fleet').scrollIntoView();
        }"""
    )
    scrolled = page.evaluate("window.scrollY")
    checkouts = get_pool_metrics("main").checkouts
    assert page.evaluate(ROW_TEXT, ["pool-counters", "main"])[1] == str(checkouts)
    for _ in range(3):
        with session_scope("main") as session:
            session.execute(text("SELECT 1"))
    page.wait_for_function(
        f"() => ({ROW_TEXT})(['pool-counters', 'main'])[1] === '{checkouts + 3}'"
    )
    breaker = get_circuit_breaker("other")
    for _ in range(breaker.failure_threshold):
        breaker.record_failure()
    page.wait_for_function(f"() => ({ROW_TEXT})(['pool-counters', 'other'])[0] === 'open'")
    page.wait_for_function(
        f"() => ({ROW_TEXT})(['fleet-table', 'other'])[0].startsWith('unreachable')"
    )
    return {
        "connections_other": page.evaluate(ROW_TEXT, ["pool-connections", "other"]),
        "kept": page.evaluate(
            """() => [window.mingusMarker,
                      window.mingusActions === document.getElementById('pool-actions'),
                      document.activeElement.id]"""
        ),
        "scrolled_by": page.evaluate("window.scrollY") - scrolled,
    }


def hide_and_show(page: Any, fetches: list[float]) -> dict[str, Any]:
    """Hide the tab for two and a half refresh periods, then show it again."""
    page.evaluate("mingusSetHidden(true)")
    hidden_at = len(fetches)
    page.wait_for_timeout(2_500)
    found = {
        "fetches_while_hidden": len(fetches) - hidden_at,
        "status": page.inner_text("#mingus-refresh-status"),
    }
    page.evaluate("mingusSetHidden(false)")
    shown_at = time.monotonic()
    wait_for_fetches(page, fetches, hidden_at + 1)
    found["resumed_after"] = fetches[hidden_at] - shown_at
    return found


def test_the_dashboard_refreshes_in_place_and_pauses_while_hidden(
    admin_site: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """New figures (a count, an open breaker) appear without a reload; the page's state stays;
    no fetch while the tab is hidden; timers, listeners and detached nodes do not grow."""
    sync_api = require_browser()
    fetches: list[float] = []
    navigations: list[str] = []
    with sync_api.sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            context = browser.new_context(viewport=VIEWPORT, color_scheme="dark")
            context.add_init_script(INSTRUMENT)
            page = context.new_page()
            page.set_default_timeout(15_000)
            log_in(page, admin_site["dashboard"])
            page.on("request", lambda r: "live=1" in r.url and fetches.append(time.monotonic()))
            page.on("framenavigated", lambda frame: navigations.append(frame.url))
            page.wait_for_function(f"() => {STATUS}.startsWith('Updated at')")
            seen = see_new_figures(page)
            shot = screenshot_dir(tmp_path_factory) / "dashboard-breaker-open-auto-dark.png"
            page.screenshot(path=str(shot), full_page=True)
            session = context.new_cdp_session(page)
            wait_for_fetches(page, fetches, len(fetches) + 2)
            early = dom_counters(page, session)
            wait_for_fetches(page, fetches, len(fetches) + 5)
            late = dom_counters(page, session)
            hidden = hide_and_show(page, fetches)
        finally:
            browser.close()

    assert seen["kept"] == ["the same page", True, "mingus-refresh-toggle"]
    assert abs(seen["scrolled_by"]) <= 2
    assert navigations == []  # never reloaded: every new figure came by the refresh
    assert seen["connections_other"][0].startswith("unreachable (breaker open)")
    assert "%" not in seen["connections_other"][0]
    # One timer at most while running, none while hidden; one document (no parsed refresh
    # kept); as many listeners and detached nodes after five more refreshes as before them.
    assert early["running_timers"] <= 1
    assert late["running_timers"] <= 1
    assert early["documents"] == late["documents"] == 1, (early, late)
    assert early["timers"] == late["timers"] == 0, (early, late)
    assert late["listeners"] == early["listeners"], (early, late)
    assert late["detached"] <= early["detached"] + 20, (early, late)
    assert hidden["fetches_while_hidden"] == 0
    assert hidden["status"] == "Paused while the tab is hidden."
    assert hidden["resumed_after"] < 0.5  # at once, not a period later


def wait_for_fetches(page: Any, fetches: list[float], count: int, timeout: float = 15) -> None:
    """Let the page run until it has fetched its live parts ``count`` times in all."""
    deadline = time.monotonic() + timeout
    while len(fetches) < count:
        assert time.monotonic() < deadline, f"{len(fetches)} refreshes, expected {count}"
        page.wait_for_timeout(100)


def test_a_process_page_opens_from_the_fleet_and_says_when_the_process_is_gone(
    admin_site: dict[str, str], settings: Any
) -> None:
    """The fleet table links each process to its page (host, pid, role, last update, pools with
    breaker, timeouts, connect errors and leaks); once the process stops monitoring, the open
    page says it is not live, and a process that never was answers 404."""
    sync_api = require_browser()
    host, pid = socket.gethostname(), os.getpid()
    with sync_api.sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.set_default_timeout(15_000)
            log_in(page, admin_site["dashboard"])
            columns = page.locator("#fleet-table thead th").all_inner_texts()
            page.click(f'#fleet-table a >> text="{host}:{pid}"')
            page.wait_for_url(admin_site["process"])
            heading = page.inner_text("#content h1")
            summary = page.inner_text("#process-summary")
            counters = page.locator("#pool-counters thead th").all_inner_texts()
            pools = page.locator("#pool-counters tbody th").all_inner_texts()
            page.wait_for_function(f"() => {STATUS}.startsWith('Updated at')")

            config = copy.deepcopy(settings.MINGUS_SESSIONS)
            config["MONITORING"] = False
            settings.MINGUS_SESSIONS = config  # so that no page starts the sampler again
            stop_monitoring()  # this process leaves the fleet
            page.wait_for_selector("#process-gone")
            gone = page.inner_text("#process-gone")
            still_there = page.url

            never = f"{admin_site['dashboard']}process/{quote(host)}/1/"
            response = page.goto(never)
            assert response is not None
            status = response.status
            never_text = page.inner_text("#process-gone")
        finally:
            browser.close()

    assert [c.strip().lower() for c in columns] == [
        "process",
        "role",
        "updated",
        "sessions",
        "pool",
        "utilization",
        "waiting",
        "breaker",
        "timeouts",
        "connect errors",
        "leaks",
    ]
    assert heading == f"Process {host}:{pid}"
    for line in (f"Host\t{host}", f"PID\t{pid}", "Role\tweb", "Last update\t"):
        assert line in summary
    assert [c.strip().lower() for c in counters][:2] == ["pool", "circuit breaker"]
    assert {"timeouts", "leaks", "connect errors"} <= {c.strip().lower() for c in counters}
    assert pools == ["main", "other"]
    assert gone.startswith(f"Process {host}:{pid} is not live")
    assert still_there == admin_site["process"]  # said on the open page, without a reload
    assert status == 404
    assert never_text.startswith(f"Process {host}:1 is not live")
