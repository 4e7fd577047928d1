"""The ``ModelAdmin`` of :class:`~mingus_sessions.models.ConnectionPool`: URLs and permissions.

The model has no table, so none of ``ModelAdmin``'s own views (changelist
query, add, change form, delete, history) is routed. Its URLs are, under
``admin/mingus_sessions/connectionpool/``:

- ``""``: the dashboard (the changelist URL, so the admin index links to it);
- ``pool/<name>/``: one pool (named like a change view, so admin log entries
  link to it);
- ``process/<host>/<pid>/``: one process of the fleet (404 once it is no longer live);
- ``reset-all/``, ``dispose-all/``; ``pool/<name>/reset/``, ``pool/<name>/dispose/``,
  ``pool/<name>/reset-breaker/``: the actions, POST only.

Every view goes through ``admin_site.admin_view``: active staff only (others
are sent to the login page), CSRF-checked, never cached. Pages need the view
permission (or change, which implies it); actions need the change permission.

A page asked with ``?live=1`` answers its live parts alone (the page's body
without the admin's header, sidebar and messages): what the page's script
fetches every few seconds to refresh itself in place.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path
from django.views.decorators.http import require_POST

from ..engines import pool_names
from ..models import ConnectionPool
from .actions import ACTIONS, get_action
from .views import admin_url, dashboard_context, pool_context, process_context, url_name

__all__ = ["ConnectionPoolAdmin"]

_TEMPLATES = "mingus_sessions/admin/"

if TYPE_CHECKING:
    _ModelAdmin = admin.ModelAdmin[ConnectionPool]
else:
    # ModelAdmin is generic only in django-stubs; at run time it takes no subscript.
    _ModelAdmin = admin.ModelAdmin


class ConnectionPoolAdmin(_ModelAdmin):
    """The pools dashboard, one page per pool, and the pool actions."""

    # -- permissions: the pools come from settings, so nothing is added or deleted ----------

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(
        self, request: HttpRequest, obj: ConnectionPool | None = None
    ) -> bool:
        return False

    # -- URLs -------------------------------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        def wrap(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
            return self.admin_site.admin_view(view)

        patterns = [
            path("", wrap(self.changelist_view), name=url_name("changelist")),
            path("pool/<str:pool>/", wrap(self.pool_view), name=url_name("change")),
            path(
                "process/<str:host>/<int:pid>/",
                wrap(self.process_view),
                name=url_name("process"),
            ),
        ]
        for action in ACTIONS.values():
            view = wrap(require_POST(self.action_view))
            patterns.append(
                path(
                    f"pool/<str:pool>/{action.slug}/",
                    view,
                    {"action": action.slug},
                    name=url_name(action.slug),
                )
            )
            if action.applies_to_all:
                patterns.append(
                    path(
                        f"{action.slug}-all/",
                        view,
                        {"action": action.slug},
                        name=url_name(f"{action.slug}-all"),
                    )
                )
        return patterns

    # -- views ------------------------------------------------------------------------------

    def _context(self, request: HttpRequest, title: str) -> dict[str, Any]:
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        request.current_app = self.admin_site.name
        return {
            **self.admin_site.each_context(request),
            "title": title,
            "opts": self.opts,
            "app_label": self.opts.app_label,
            "has_change_permission": self.has_change_permission(request),
        }

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        """The dashboard, in place of a list of rows (there is no table to list)."""
        context = self._context(request, "Connection pools")
        context.update(
            dashboard_context(self.admin_site.name, can_change=context["has_change_permission"])
        )
        context.update(extra_context or {})
        return _render(request, "dashboard", context)

    def pool_view(self, request: HttpRequest, pool: str) -> HttpResponse:
        """One pool's page."""
        context = self._context(request, "")
        name = _known_pool(pool)
        context["title"] = f"Connection pool {name}"
        context.update(
            pool_context(self.admin_site.name, name, can_change=context["has_change_permission"])
        )
        return _render(request, "pool", context)

    def process_view(self, request: HttpRequest, host: str, pid: int) -> HttpResponse:
        """One process of the fleet; 404 when it is not live, 503 when the fleet is unknown."""
        name = unquote(host)
        context = self._context(request, f"Process {name}:{pid}")
        context.update(process_context(self.admin_site.name, name, pid))
        status = 200
        if context["fleet"].error:
            status = 503
        elif context["process"] is None:
            status = 404
        return _render(request, "process", context, status=status)

    def action_view(
        self, request: HttpRequest, action: str, pool: str | None = None
    ) -> HttpResponse:
        """Run an action on one pool (``pool``) or on every pool, then go back to the page."""
        if not self.has_change_permission(request):
            raise PermissionDenied
        chosen = get_action(action)
        if pool is None:
            names = list(pool_names())
            message = chosen.perform(names, user=request.user, every=True)
        else:
            name = _known_pool(pool)
            message = chosen.perform([name], user=request.user)
        messages.success(request, message)
        site = self.admin_site.name
        if pool is not None and request.POST.get("next") == "pool":
            return HttpResponseRedirect(admin_url(site, "change", unquote(pool)))
        return HttpResponseRedirect(admin_url(site, "changelist"))


def _render(
    request: HttpRequest, page: str, context: dict[str, Any], *, status: int = 200
) -> HttpResponse:
    """The page ``page``, or with ``?live=1`` its live parts alone (the refresh's fetch)."""
    live = request.GET.get("live") == "1"
    template = f"{_TEMPLATES}_{page}_body.html" if live else f"{_TEMPLATES}{page}.html"
    context["live_url"] = f"{request.path}?live=1"
    return TemplateResponse(request, template, context, status=status)


def _known_pool(quoted: str) -> str:
    name = unquote(quoted)
    if name not in pool_names():
        raise Http404(f'No pool named "{name}" in MINGUS_SESSIONS["POOLS"].')
    return name
