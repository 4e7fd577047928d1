"""What the core tells an observer of its pools and scopes: two small protocols.

Plain Python. The core never imports OpenTelemetry (an optional package): it
calls these hooks, and :mod:`mingus_sessions.otel` implements them over
OpenTelemetry's API. A pool without an observer pays one attribute test per
event: the recorder's ``telemetry`` and a frame's ``trace`` are ``None``.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["PoolTelemetry", "ScopeTrace"]


class ScopeTrace(Protocol):
    """One scope's trace (its span), started when the scope opened its session."""

    def end(self, exc: BaseException | None) -> None:
        """The scope ended: committed or rolled back, and ``exc`` if it failed."""


class PoolTelemetry(Protocol):
    """An observer of one pool's connections, told of each by its :class:`~.recorder.PoolRecorder`.

    The three durations are in seconds; each call happens on the pool's hot
    path and must not raise.
    """

    def connection_created(self, seconds: float) -> None: ...

    def connection_waited(self, seconds: float) -> None: ...

    def connection_used(self, seconds: float) -> None: ...
