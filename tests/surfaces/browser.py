"""What the admin's browser tests share: Debian's Chromium through Playwright, the static
files, a user, a login, and traffic for the charts (not a test module itself).

Without ``/usr/bin/chromium`` the tests are skipped, except under CI (``CI`` set), where
they fail. Playwright drives that Chromium; it never downloads one. Django's ORM is used
only before the browser starts and after it stops: while Playwright's sync API is running,
the test thread counts as async context.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import django.contrib.admin
import pytest
from django.contrib.auth.models import Permission, User
from django.test import override_settings
from sqlalchemy import text

import mingus_sessions
from mingus_sessions import session_scope

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
BACKEND = os.environ.get("MINGUS_TEST_DATABASE", "sqlite")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PASSWORD = "browser-test-password"
DASHBOARD_PATH = "/admin/mingus_sessions/connectionpool/"


def require_browser() -> Any:
    """Playwright's sync API, or a skip (a failure under CI) when the browser is missing."""
    missing = None
    if not CHROMIUM.exists():
        missing = f"{CHROMIUM} is missing (apt-get install chromium)"
    else:
        try:
            from playwright import sync_api
        except ImportError:
            missing = "playwright is not installed (pip install -e '.[dev]')"
    if missing is not None:
        if os.environ.get("CI"):
            pytest.fail(f"The browser test needs a browser under CI: {missing}.")
        pytest.skip(missing)
    return sync_api


def launch(playwright: Any) -> Any:
    """Debian's Chromium, headless."""
    return playwright.chromium.launch(
        executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
    )


@pytest.fixture(scope="session")
def static_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The admin's and this package's static files, served by the live server.

    The suite's settings have no ``django.contrib.staticfiles``, so the live
    server serves STATIC_ROOT under STATIC_URL: here a directory that links
    both apps' ``static`` folders. It reads STATIC_URL once, when the
    session-scoped server starts: so this session-scoped fixture must come
    before ``live_server`` in the test's arguments.
    """
    root = tmp_path_factory.mktemp("static")
    (root / "admin").symlink_to(Path(django.contrib.admin.__file__).parent / "static" / "admin")
    package = Path(mingus_sessions.__file__).parent / "static" / "mingus_sessions"
    (root / "mingus_sessions").symlink_to(package)
    override = override_settings(STATIC_URL="/static/", STATIC_ROOT=str(root))
    override.enable()
    yield
    override.disable()


def screenshot_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the screenshots go: ``MINGUS_SCREENSHOT_DIR`` if set, else a temporary directory."""
    chosen = os.environ.get("MINGUS_SCREENSHOT_DIR")
    if chosen:
        path = Path(chosen)
        path.mkdir(parents=True, exist_ok=True)
        return path
    return tmp_path_factory.mktemp("admin-screenshots")


def operator(name: str = "operator") -> User:
    """A staff user with the change permission (so the action buttons show), password PASSWORD."""
    user = User.objects.create_user(name, password=PASSWORD, is_staff=True)
    user.user_permissions.add(
        Permission.objects.get(
            content_type__app_label="mingus_sessions", codename="change_connectionpool"
        )
    )
    return user


def log_in(page: Any, url: str, username: str = "operator") -> None:
    """Open ``url``, sign in through the admin's login form, and land on ``url``."""
    page.goto(url)
    assert "/admin/login/" in page.url
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(url)


def traffic(stop_after: float) -> None:
    """Scopes on both pools from several threads, contending for a small main pool."""
    statement = "SELECT pg_sleep(0.02)" if BACKEND == "postgresql" else "SELECT 1"
    deadline = time.monotonic() + stop_after

    def work(pool: str) -> int:
        done = 0
        while time.monotonic() < deadline:
            with session_scope(pool) as session:
                session.execute(text(statement))
            done += 1
            time.sleep(0.005)  # as a request would, rather than re-taking the connection at once
        return done

    with ThreadPoolExecutor(max_workers=6, thread_name_prefix="admin-browser-load") as pool:
        futures = [pool.submit(work, "main" if n < 5 else "other") for n in range(6)]
        assert all(f.result() > 0 for f in futures)
