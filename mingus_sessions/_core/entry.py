"""What the registry keeps per pool: :class:`PoolEntry`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from .config import PoolConfig
from .engine_args import EngineSpec
from .pools import PoolProbe
from .telemetry import ScopeTrace

if TYPE_CHECKING:  # the asyncio extension is imported only by projects that use it
    from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

__all__ = ["AsyncPoolEntry", "PoolEntry"]

#: The type of a pool's sessionmakers (the field names shadow the class in the dataclasses).
SessionFactory = sessionmaker[Session]


@dataclass(eq=False)
class PoolEntry:
    """One pool's engine, its sessionmaker and recorder, and what they were built from."""

    name: str
    config: PoolConfig
    spec: EngineSpec
    engine: Engine
    sessionmaker: sessionmaker[Session]
    probe: PoolProbe
    # Never in the repr: the DATABASES entry holds the password.
    settings_dict: dict[str, Any] = field(repr=False)
    built_for: Any = field(repr=False)  # the settings_dict NAME the engine was built with
    #: Whether sessions record where they were opened (for leak reports).
    track_sites: bool = False
    #: Sessions whose transactions are read-only (``session_scope(read_only=True)``
    #: served by this pool's own database), made on first use.
    read_only_sessionmaker: SessionFactory | None = None
    #: Starts a scope's trace (an OpenTelemetry span) when the pool is traced; else None.
    start_trace: Callable[[], ScopeTrace] | None = field(default=None, repr=False)
    #: The pool's OpenTelemetry hooks (``mingus_sessions.otel.PoolTelemetry``), or None.
    telemetry: Any = field(default=None, repr=False)

    @property
    def stale(self) -> bool:
        return bool(self.settings_dict.get("NAME") != self.built_for)


@dataclass(eq=False)
class AsyncPoolEntry:
    """One pool's async engine on one event loop, built from the pool's sync entry.

    It shares the sync entry's recorder (one pool, one set of metrics) and
    follows it: when the sync entry is rebuilt (the test database changed) or
    the registry's generation moves on (settings changed, a reset, a fork),
    the next use on this loop builds a new one.
    """

    name: str
    base: PoolEntry
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    generation: int
    #: Sessions whose transactions are read-only, made on first use.
    read_only_sessionmaker: async_sessionmaker[AsyncSession] | None = None
    #: The async generator that disposes of the engine when its loop shuts down
    #: (the loop holds it weakly; this keeps it alive).
    closer: Any = field(default=None, repr=False)
