"""URLs of the demo project.

The communications pages at ``/``, the admin at ``/admin/`` (with the
"Connection pools" dashboard), the library's endpoints (``/health/database``,
``/metrics/database``, ``/metrics/database/prometheus``, ``/dashboard/database``)
and django-health-check's page at ``/ht/`` with one check per pool.
"""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path
from health_check.views import HealthCheckView

from mingus_sessions.health import PoolHealthCheck

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("mingus_sessions.urls")),
    path(
        "ht/",
        HealthCheckView.as_view(
            checks=[(PoolHealthCheck, {"pool": name}) for name in ("main", "celery", "analytics")]
        ),
    ),
    path("", include("project.communications.urls")),
]
