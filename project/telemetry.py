"""OpenTelemetry for the demo: the SDK, exporting to the console or to an OTLP endpoint.

Off unless asked, so that ``make demo`` stays quiet and needs no collector:

- ``OTEL_EXPORTER_OTLP_ENDPOINT`` set (``http://127.0.0.1:4318``): spans and
  metrics go there over OTLP/HTTP (the exporters read the standard
  ``OTEL_EXPORTER_OTLP_*`` variables themselves);
- else ``DEMO_OTEL=console``: spans and metrics are printed on the console
  (metrics every ``DEMO_OTEL_INTERVAL`` seconds, default 30).

``OTEL_SERVICE_NAME`` names the service (default ``mingus-demo``). The demo's
app calls :func:`configure` when Django starts (web and Celery worker), before
any engine is built: mingus_sessions hooks an engine only when an SDK is
configured by then.
"""

from __future__ import annotations

import logging
import os

logger = logging.getLogger("project")

_configured = False


def configure() -> str | None:
    """Set OpenTelemetry's global providers as the environment asks; what was chosen, or None."""
    global _configured
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    console = os.environ.get("DEMO_OTEL", "").strip().lower()
    if _configured or not (endpoint or console):
        return None
    if console not in ("", "console"):
        raise ValueError(f"DEMO_OTEL is {console!r}: the demo knows only DEMO_OTEL=console.")
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import (
        ConsoleMetricExporter,
        MetricExporter,
        PeriodicExportingMetricReader,
    )
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

    span_exporter: SpanExporter
    metric_exporter: MetricExporter
    if endpoint:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        span_exporter, metric_exporter, chosen = OTLPSpanExporter(), OTLPMetricExporter(), "otlp"
    else:
        span_exporter, metric_exporter = ConsoleSpanExporter(), ConsoleMetricExporter()
        chosen = "console"
    interval = float(os.environ.get("DEMO_OTEL_INTERVAL") or 30)
    resource = Resource.create(
        {"service.name": os.environ.get("OTEL_SERVICE_NAME") or "mingus-demo"}
    )
    tracers = TracerProvider(resource=resource)
    tracers.add_span_processor(BatchSpanProcessor(span_exporter))
    trace.set_tracer_provider(tracers)
    reader = PeriodicExportingMetricReader(metric_exporter, export_interval_millis=interval * 1000)
    metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=[reader]))
    _configured = True
    logger.info("OpenTelemetry: exporting spans and metrics to %s", endpoint or chosen)
    return chosen
