"""App config of the demo's communications app."""

from __future__ import annotations

from django.apps import AppConfig


class CommunicationsConfig(AppConfig):
    name = "project.communications"
    label = "communications"
    verbose_name = "Communications"
    default_auto_field = "django.db.models.BigAutoField"
