"""The Django app config: registers the system checks."""

from __future__ import annotations

from django.apps import AppConfig


class MingusSessionsConfig(AppConfig):
    name = "mingus_sessions"
    verbose_name = "Database sessions"
    default_auto_field = "django.db.models.AutoField"

    def ready(self) -> None:
        # Importing these connects the system checks and the setting_changed
        # receiver; nothing here reads settings or opens a connection.
        from . import checks, conf  # noqa: F401
