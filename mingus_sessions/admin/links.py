"""The admin URLs of the "Connection pools" pages and actions, by name."""

from __future__ import annotations

from django.contrib.admin.utils import quote
from django.urls import reverse

__all__ = ["admin_url", "process_url", "url_name"]

_APP = "mingus_sessions"
_MODEL = "connectionpool"


def url_name(what: str) -> str:
    """The admin URL name of one of the pages or actions (``admin:`` namespace not included)."""
    return f"{_APP}_{_MODEL}_{what.replace('-', '_')}"


def admin_url(site: str, what: str, pool: str | None = None) -> str:
    """The URL of a page or action of admin site ``site`` (``pool``: a pool name, unquoted)."""
    args = (quote(pool),) if pool is not None else ()
    return reverse(f"{site}:{url_name(what)}", args=args, current_app=site)


def process_url(site: str, host: str, pid: int) -> str:
    """The URL of the page of process ``pid`` on ``host`` (the host name, unquoted)."""
    return reverse(f"{site}:{url_name('process')}", args=(quote(host), pid), current_app=site)
