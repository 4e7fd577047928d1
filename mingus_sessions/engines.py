"""One engine per pool per process, built lazily from ``DATABASES``.

Each pool's engine is built on first use from the live ``settings_dict`` of
its database alias, so engines follow the test database that Django's test
runner creates; if that ``NAME`` changes later, the engine is rebuilt. The
entries live in the registry (:data:`~mingus_sessions._core.state.state`),
which also makes them fork-safe: after ``os.fork()`` the child drops the
parent's pooled connections (without closing them, which would end the
parent's sessions) and opens its own.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, create_engine
from sqlalchemy.engine.base import OptionEngine
from sqlalchemy.orm import sessionmaker
from sqlalchemy.pool import PoolProxiedConnection

from . import conf, otel
from ._core.config import Config, PoolConfig
from ._core.engine_args import EngineSpec, build_engine_spec
from ._core.entry import PoolEntry
from ._core.listeners import install_listeners
from ._core.pools import PoolProbe, WaitAwareQueuePool
from ._core.recorder import PoolRecorder
from ._core.replicas import track_commit_positions
from ._core.state import state

__all__ = ["PoolEntry", "dispose_engines", "get_engine", "get_entry", "pool_names"]

logger = logging.getLogger("mingus_sessions")


def pool_names() -> tuple[str, ...]:
    """The configured pool names, default pool first."""
    config = conf.get_config()
    return (config.default_pool, *(n for n in config.pools if n != config.default_pool))


def get_entry(pool: str | None = None) -> PoolEntry:
    """The registry entry of ``pool`` (the default pool for ``None``), built if needed."""
    entry = state.pools.get(pool) if pool is not None else None
    if entry is not None and not entry.stale:
        return entry
    config = conf.get_config()
    name = config.default_pool if pool is None else pool
    entry = state.pools.get(name)
    if entry is not None and not entry.stale:
        return entry
    return _build(name)


def get_engine(pool: str | None = None) -> Engine:
    """The pool's :class:`~sqlalchemy.Engine` (the default pool for ``None``)."""
    return get_entry(pool).engine


def _build(name: str) -> PoolEntry:
    config = conf.get_config()
    pool_config = conf.pool_config(name)
    with state.lock:
        entry = state.pools.get(name)
        if entry is not None and not entry.stale:
            return entry
        if entry is not None:
            logger.info("Database of pool %s changed; rebuilding its engine", name)
            entry.engine.dispose()
        settings_dict = conf.database_settings(pool_config.database)
        spec = build_engine_spec(
            settings_dict,
            pool_config,
            log_parameters=config.log_query_parameters,
            time_zone=conf.database_time_zone(pool_config.database),
        )
        engine = create_engine(spec.url, **spec.kwargs)
        probe = _probe_for(name, config)
        telemetry = otel.telemetry_for(name, config, spec)
        if (
            telemetry is not None
            and telemetry.instruments is not None
            and isinstance(probe, PoolRecorder)
        ):
            probe.telemetry = telemetry
        instrument(engine, spec, probe, pool_config, guarded=True, telemetry=telemetry)
        entry = PoolEntry(
            name=name,
            config=pool_config,
            spec=spec,
            engine=engine,
            sessionmaker=sessionmaker(bind=engine, expire_on_commit=False),
            probe=probe,
            settings_dict=settings_dict,
            built_for=settings_dict.get("NAME"),
            track_sites=isinstance(probe, PoolRecorder) and probe.leak_threshold is not None,
            telemetry=telemetry,
            start_trace=telemetry.start_trace
            if telemetry is not None and telemetry.tracer is not None
            else None,
        )
        state.pools[name] = entry
        listeners = state.panel_listeners
        if listeners is not None:
            # Built during a request the debug-toolbar panel instruments.
            listeners.watch(engine, name, joined=False)
        return entry


def instrument(
    engine: Engine,
    spec: EngineSpec,
    probe: PoolProbe,
    pool_config: PoolConfig,
    *,
    guarded: bool,
    telemetry: otel.PoolTelemetry | None = None,
) -> None:
    """Give a pool's engine (sync, or an async engine's sync side) its probe and listeners.

    ``guarded``: ask the pytest plugin's connect guard, when it is on, before each checkout.
    ``telemetry``: the pool's OpenTelemetry hooks, if it has them.
    """
    if isinstance(engine.pool, WaitAwareQueuePool):
        engine.pool.probe = probe
    install_listeners(engine, spec, probe, pool_config)
    if telemetry is not None:
        # Before the recorder's listeners: a MariaDB server is known to the
        # telemetry before the first connection's create time is recorded.
        telemetry.install(engine, vendor=spec.vendor)
    if guarded and state.connect_guard is not None:
        _guard(engine, pool_config.database)
    if isinstance(probe, PoolRecorder):
        probe.install(engine)
    if pool_config.replicas:
        track_commit_positions(engine, pool_config.name, pool_config.max_replica_lag)


def set_connect_guard(guard: Callable[[str], None] | None) -> None:
    """Install ``guard`` on every engine, built or to be built; ``None`` switches it off.

    For the pytest plugin only: ``guard(alias)`` raises when the running test
    may not use that database. Engines built before it are guarded in place,
    so that code holding one (a module-level ``get_engine()``) is guarded too.
    Production engines are built without the wrapper that calls it.
    """
    with state.lock:
        state.connect_guard = guard
        engines = [(entry.engine, entry.config.database) for entry in state.pools.values()]
        engines += [
            (entry.engine.sync_engine, entry.base.config.database)
            for entries in state.async_pools.values()
            for entry in entries.values()
        ]
    if guard is not None:
        for engine, alias in engines:
            _guard(engine, alias)


def _guard(engine: Engine, alias: str) -> None:
    """Make ``engine`` call the connect guard before each checkout from its pool.

    The guard runs before the pool is asked, so that a refusal leaves the pool
    as it was: raising from a pool ``checkout`` listener would leak the
    connection it had already checked out. Every checkout of an engine goes
    through ``raw_connection()`` (a new ``Connection``, and one revalidating
    after an invalidation); engines made by ``execution_options()`` reach the
    pool through their own class, so they get one that asks their parent.
    """
    target: Any = engine
    if "raw_connection" in vars(target):
        return  # already guarded
    unguarded = engine.raw_connection

    def raw_connection() -> PoolProxiedConnection:
        guard = state.connect_guard
        if guard is not None:
            guard(alias)
        return unguarded()

    # Instance attributes shadow the class's methods for this engine only.
    target.raw_connection = raw_connection
    target._option_cls = _GuardedOptionEngine


class _GuardedOptionEngine(OptionEngine):
    """An ``execution_options()`` engine of a guarded engine: checkouts go through the guard."""

    def raw_connection(self) -> PoolProxiedConnection:
        return self._proxied.raw_connection()


_GuardedOptionEngine._option_cls = _GuardedOptionEngine


def _probe_for(name: str, config: Config) -> PoolProbe:
    """A full recorder when MONITORING is on; otherwise only what errors need."""
    if not config.monitoring:
        return PoolProbe(name)
    return PoolRecorder(
        name,
        leak_threshold=config.leak_threshold,
        slow_threshold=config.slow_query_threshold,
        log_parameters=config.log_query_parameters,
    )


def dispose_engines(close: bool = True) -> None:
    """Dispose every engine and forget it; the next use builds a new one.

    ``close=False`` drops the pooled connections without closing them (for a
    process that inherited them and must not end the owner's sessions).
    """
    state.dispose_engines(close=close)
