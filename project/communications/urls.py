"""URLs of the communications app (mounted at ``/``)."""

from __future__ import annotations

from django.urls import path

from . import views

app_name = "communications"

urlpatterns = [
    path("", views.index, name="index"),
]
