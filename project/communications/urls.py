"""URLs of the communications app (mounted at ``/``)."""

from __future__ import annotations

from django.urls import path

from . import live, views

app_name = "communications"

urlpatterns = [
    path("", views.index, name="index"),
    path("send-sms/", views.send_sms, name="send_sms"),
    path("preferences/", views.preferences_index, name="preferences_index"),
    path("preferences/<str:username>/", views.preferences, name="preferences"),
    path("analytics/", views.analytics, name="analytics"),
    path("live/", live.live_analytics, name="live_analytics"),
    path("live/feed/", live.live_analytics_feed, name="live_analytics_feed"),
]
