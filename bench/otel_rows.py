"""What OpenTelemetry costs a scope: off, the API without an SDK, and an SDK.

Rows of ``bench.bench_suite`` (``--only otel`` prints them alone), on the
suite's pool "main" (``PRE_PING: True``, MONITORING on): a ``session_scope()``
``SELECT 1`` on three engines of that pool, built as the package builds them

- with ``OPENTELEMETRY: False``;
- with OpenTelemetry on and only the API (OpenTelemetry's default providers:
  no SDK configured);
- with OpenTelemetry on and the SDK: a ``TracerProvider`` exporting every span
  to an ``InMemorySpanExporter`` through a ``SimpleSpanProcessor`` (the span
  is exported as it ends, on the caller's thread) and a ``MeterProvider`` with
  an ``InMemoryMetricReader`` (the operation duration and the three connection
  times recorded, the gauges read at collection).

The three run interleaved in one run, round by round, in a rotating order (the
registry's entry of "main" is swapped between rounds; nothing else changes).
Targets (DESIGN.md, "Performance budget"): the API alone at most 1.01x off, the
SDK at most 1.05x off. The exporter is emptied and the reader collected
between rounds, outside the timing.
"""

from __future__ import annotations

import copy
import gc
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from bench.bench_metrics import count_calls
from bench.rows import Row, judged, row_of, single_figure

#: Scopes per round.
SCOPES = 2_000

API_TARGET = 1.01
SDK_TARGET = 1.05


@contextmanager
def three_engines() -> Iterator[dict[str, Any]]:
    """The registry entries of "main" built off, with the API only, and with an SDK."""
    from django.conf import settings
    from django.test import override_settings
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from mingus_sessions._core.state import state
    from mingus_sessions.engines import get_entry
    from mingus_sessions.otel import use_providers

    base = copy.deepcopy(settings.MINGUS_SESSIONS)
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    exporter = InMemorySpanExporter()
    tracers = TracerProvider()
    tracers.add_span_processor(SimpleSpanProcessor(exporter))
    entries: dict[str, Any] = {}

    def build(name: str, on: bool) -> None:
        with override_settings(MINGUS_SESSIONS={**base, "OPENTELEMETRY": on}):
            entry = get_entry("main")
            # Kept out of the registry, so that leaving the override leaves it built.
            entries[name] = state.pools.pop("main")
            assert (entry.telemetry is not None) is (name == "sdk"), name

    try:
        use_providers()
        build("off", False)
        build("api", True)
        use_providers(tracers, meters)
        build("sdk", True)
        use_providers()
        entries["_reader"] = reader
        entries["_exporter"] = exporter
        yield entries
    finally:
        use_providers()
        for name in ("off", "api", "sdk"):
            if name in entries:
                entries[name].engine.dispose()
        state.pools.pop("main", None)
        meters.shutdown()
        tracers.shutdown()


def scopes(n: int) -> None:
    from sqlalchemy import text

    from mingus_sessions import session_scope

    select_1 = text("SELECT 1")
    for _ in range(n):
        with session_scope("main") as session:
            session.execute(select_1)


def interleaved(
    entries: dict[str, Any], rounds: int, n: int, verbose: bool
) -> dict[str, list[float]]:
    """µs per scope of each engine, per round, the three timed in a rotating order."""
    from mingus_sessions._core.state import state

    names = ["off", "api", "sdk"]
    samples: dict[str, list[float]] = {name: [] for name in names}

    def timed(name: str, count: int) -> float:
        state.pools["main"] = entries[name]
        gc.collect()
        started = time.perf_counter()
        scopes(count)
        return (time.perf_counter() - started) / count * 1e6

    for name in names:  # warm: connections open, statements compiled
        timed(name, max(n // 4, 1))
    for index in range(rounds):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].append(timed(name, n))
        entries["_exporter"].clear()
        entries["_reader"].collect()
        if verbose:
            figures = "  ".join(f"{name} {samples[name][-1]:8.1f} µs" for name in names)
            print(f"    round {index:3}: {figures}", flush=True)
    return samples


def calls(entries: dict[str, Any], count: int = 200) -> dict[str, tuple[float, float]]:
    """Python and C calls per scope of each engine (``sys.setprofile``): a count, no noise."""
    from mingus_sessions._core.state import state

    found = {}
    for name in ("off", "api", "sdk"):
        state.pools["main"] = entries[name]
        scopes(20)  # warm: this engine's statements compiled
        python_calls, c_calls, _ = count_calls(scopes, count)
        found[name] = (python_calls, c_calls)
        entries["_exporter"].clear()
    return found


def rows(rounds: int, verbose: bool, n: int = SCOPES) -> list[Row]:
    with three_engines() as entries:
        samples = interleaved(entries, rounds, n, verbose)
        counted = calls(entries)
    api = row_of(samples["api"], samples["off"])
    sdk = row_of(samples["sdk"], samples["off"])
    found = [
        judged(
            api,
            "OpenTelemetry, API only (no SDK) vs OPENTELEMETRY off, scope SELECT 1",
            f"<= {API_TARGET}x",
            api.ratio <= API_TARGET,
        ),
        judged(
            sdk,
            "OpenTelemetry, SDK (in-memory reader, exporter) vs off, scope SELECT 1",
            f"<= {SDK_TARGET}x",
            sdk.ratio <= SDK_TARGET,
        ),
    ]
    found[0].notes.append(f"{api.difference_us:+.1f} µs per scope, paired by round")
    found[1].notes.append(
        f"{sdk.difference_us:+.1f} µs per scope, paired by round: two spans (the scope's, the "
        "statement's) and three histogram records (wait, use, operation)"
    )
    (off_py, off_c), (api_py, api_c), (sdk_py, sdk_c) = (
        counted["off"],
        counted["api"],
        counted["sdk"],
    )
    api_calls = single_figure(
        "Python calls per scope, API only minus off (sys.setprofile)",
        api_py - off_py,
        "0 (no hook without an SDK)",
        abs(api_py - off_py) < 1,
    )
    api_calls.notes.append(
        f"off {off_py:.0f} Python + {off_c:.0f} C calls, API only {api_py:.0f} + {api_c:.0f}"
    )
    sdk_calls = single_figure(
        "Python calls per scope, SDK minus off (sys.setprofile)",
        sdk_py - off_py,
        "reported",
        True,
    )
    sdk_calls.met = None
    sdk_calls.notes.append(
        f"SDK {sdk_py:.0f} Python + {sdk_c:.0f} C calls; ours are about a dozen "
        "(tests/scopes/test_call_budget.py), the rest the SDK's"
    )
    return [*found, api_calls, sdk_calls]
