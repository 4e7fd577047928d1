"""What the registry keeps per pool: :class:`PoolEntry`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from .config import PoolConfig
from .engine_args import EngineSpec
from .pools import PoolProbe

__all__ = ["PoolEntry"]


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

    @property
    def stale(self) -> bool:
        return bool(self.settings_dict.get("NAME") != self.built_for)
