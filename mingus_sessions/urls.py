"""URLs: ``path("", include("mingus_sessions.urls"))`` (namespace ``mingus_sessions``)."""

from __future__ import annotations

from django.urls import path

from . import views

app_name = "mingus_sessions"

urlpatterns = [
    path("health/database", views.health, name="health"),
    path("metrics/database", views.metrics, name="metrics"),
    path("metrics/database/prometheus", views.prometheus, name="prometheus"),
    path("dashboard/database", views.dashboard, name="dashboard"),
]
