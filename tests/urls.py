from __future__ import annotations

from django.contrib import admin
from django.urls import include, path
from health_check.views import HealthCheckView

from mingus_sessions.health import PoolHealthCheck
from tests import views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("mingus_sessions.urls")),
    path(
        "ht/",
        HealthCheckView.as_view(
            checks=[(PoolHealthCheck, {"pool": "main"}), (PoolHealthCheck, {"pool": "other"})]
        ),
    ),
    path("write/<str:title>/", views.write),
    path("write/<str:title>/<int:status>/", views.write),
    path("write-current/<str:title>/", views.write_with_current),
    path("write-raise/<str:title>/", views.write_then_raise),
    path("no-database/", views.no_database),
    path("on-commit/<int:status>/", views.on_commit_only),
    path("commit-midway/<str:outcome>/", views.commit_midway),
    path("orphan/", views.orphan_child),
    path("stream/<str:title>/", views.stream_titles),
    path("export/", views.export_titles),
    path("concurrent/<str:marker>/", views.concurrent),
    path("async/write/<str:title>/", views.async_write),
    path("async/write-current/<str:title>/", views.async_write_with_current),
    path("async/no-database/", views.async_no_database),
    path("async/write-fail/<str:title>/", views.async_write_then_fail),
    path("async/stream/<str:title>/", views.async_stream),
    path("adb/write/<str:title>/", views.adb_write),
    path("adb/write/<str:title>/<int:status>/", views.adb_write),
    path("adb/write-raise/<str:title>/", views.adb_write_then_raise),
    path("adb/write-wait/<str:title>/", views.adb_write_then_wait),
    path("adb/duplicate/<str:title>/", views.adb_duplicate),
    path("adb/count/", views.adb_count),
    path("adb/stream/<str:title>/", views.adb_stream),
    path("adb/pool/", views.adb_pool),
]
