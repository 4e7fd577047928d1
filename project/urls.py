"""URLs of the demo project: the communications pages at ``/``, the admin at ``/admin/``."""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("project.communications.urls")),
]
