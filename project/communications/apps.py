"""App config of the demo's communications app."""

from __future__ import annotations

from django.apps import AppConfig


class CommunicationsConfig(AppConfig):
    name = "project.communications"
    label = "communications"
    verbose_name = "Communications"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # The demo's own OpenTelemetry setup (project/telemetry.py): off unless
        # DEMO_OTEL=console or OTEL_EXPORTER_OTLP_ENDPOINT asks for it.
        from project import telemetry

        telemetry.configure()
