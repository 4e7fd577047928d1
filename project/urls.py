"""URLs of the demo project.

The communications pages at ``/``, the admin at ``/admin/`` (with the
"Connection pools" dashboard), the library's endpoints (``/health/database``,
``/metrics/database``, ``/metrics/database/prometheus``, ``/dashboard/database``),
django-health-check's page at ``/ht/`` with one check per pool, and the load
test's endpoints under ``/load/`` (:mod:`project.loadviews`).
"""

from __future__ import annotations

from django.conf import settings
from django.contrib import admin
from django.urls import include, path
from health_check.views import HealthCheckView

from mingus_sessions.health import PoolHealthCheck

from . import loadviews

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("mingus_sessions.urls")),
    path(
        "ht/",
        HealthCheckView.as_view(
            checks=[(PoolHealthCheck, {"pool": name}) for name in ("main", "celery", "analytics")]
        ),
    ),
    path("load/sa/recent", loadviews.sa_read, name="load_sa_read"),
    path("load/sa/communications", loadviews.sa_write, name="load_sa_write"),
    path("load/orm/recent", loadviews.orm_read, name="load_orm_read"),
    path("load/orm/communications", loadviews.orm_write, name="load_orm_write"),
    path("", include("project.communications.urls")),
]


# --- django-debug-toolbar (project/settings.py turns it on with DEBUG) -----------

if getattr(settings, "DEBUG_TOOLBAR", False):
    urlpatterns += [path("__debug__/", include("debug_toolbar.urls"))]
