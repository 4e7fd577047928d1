"""The registry: everything mingus_sessions keeps in one process, in one object.

Plain Python. Every engine, breaker, counter and cache the package keeps is an
attribute of :data:`state`, the one :class:`ProcessState` of the process, and
the three events that must reach all of them go through it once each:

- a fork (:meth:`ProcessState.after_fork_in_child`, registered with
  ``os.register_at_fork`` below): the child gets fresh locks, drops the
  parent's pooled connections without closing them, and starts with no
  sampler, no health ping and no open session of its own;
- a settings change (:meth:`ProcessState.settings_changed`, called by
  ``conf``'s ``setting_changed`` receiver): everything built from the old
  settings is disposed of or forgotten;
- a test's reset (:meth:`ProcessState.reset`, the pytest plugin's
  ``reset_mingus_sessions``): closed breakers, zeroed counters, no sampler, no
  engine, no table, no ping.

A new piece of state is an attribute here, with its line in each of the three
methods. The registry holds objects of the layers above the core (the Django
tables, the request scope's class, the sampler) without importing them: it only
clears, stops or forgets them.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable
from typing import Any, Protocol

from sqlalchemy import Engine, MetaData
from sqlalchemy.pool import Pool

from .breaker import CircuitBreaker, renew_breaker_locks
from .config import Config
from .entry import AsyncPoolEntry, PoolEntry
from .replicas import ReplicaRouter, forget_positions
from .stats import SessionStats, TransactionStats

__all__ = ["ProcessState", "state"]


class _Sampler(Protocol):
    """The monitoring sampler, as the registry sees it: something to stop."""

    def halt(self) -> None: ...


class _PanelListeners(Protocol):
    """The debug-toolbar panel's engine listeners, as the registry sees them.

    Told of each engine built while they are in place, and taken off every
    engine at once (``mingus_sessions.debug_toolbar``).
    """

    def watch(self, engine: Engine, pool: str, *, joined: bool) -> None: ...

    def detach(self) -> None: ...

    def after_fork(self) -> None: ...


class _SharedBreakers(Protocol):
    """The shared state of ``CIRCUIT_BREAKER["SHARED"]`` breakers (``fleet_breaker``)."""

    def after_fork(self) -> None: ...


class ProcessState:
    """The package's state in this process; there is one, :data:`state`."""

    def __init__(self) -> None:
        #: Guards every build and every change below (a build is rare: the
        #: hot paths only read the dicts, which is safe without it).
        self.lock = threading.RLock()
        #: The validated MINGUS_SESSIONS, parsed once (``conf.get_config``).
        self.config: Config | None = None
        #: One entry (engine, sessionmaker, recorder) per pool, built on first use.
        self.pools: dict[str, PoolEntry] = {}
        #: Async engines: per event loop (held weakly), one entry per pool.
        self.async_pools: weakref.WeakKeyDictionary[Any, dict[str, AsyncPoolEntry]] = (
            weakref.WeakKeyDictionary()
        )
        #: Bumped when everything built must go (settings change, reset, fork): an
        #: async engine of an older generation is replaced at its loop's next use
        #: (it can only be closed from its own loop).
        self.async_generation = 0
        #: Tasks of ours still running on a loop, kept referenced until done: the
        #: disposal of a replaced async engine, a stream's end run from close().
        self.async_tasks: set[Any] = set()
        #: Pools a forked child stopped using: kept referenced, so that their
        #: DB-API connections are never garbage-collected (closed) in the child.
        self.orphaned_pools: list[Pool] = []
        #: Connections whose transaction PostgreSQL aborted after a statement error.
        self.aborted_connections: weakref.WeakSet[Any] = weakref.WeakSet()
        #: The engines of joined sessions, on Django's connections, per pool engine.
        self.joined_engines: dict[tuple[str, int], Engine] = {}
        #: One circuit breaker per pool.
        self.breakers: dict[str, CircuitBreaker] = {}
        #: Where shared breakers meet the fleet (the FLEET cache), once one is built.
        self.shared_breakers: _SharedBreakers | None = None
        self.sessions = SessionStats()
        self.transactions = TransactionStats()
        #: ``table_for``'s cache (model -> table and the overrides it was built
        #: with) and the one MetaData of its tables, cleared together.
        self.tables: dict[Any, Any] = {}
        self.table_metadata = MetaData()
        #: The pool of request scopes under the settings in force (the
        #: middleware's), and whether they turn monitoring on; None until the
        #: first request.
        self.request_pool: str | None = None
        self.request_monitoring = False
        #: REQUEST_COMMIT_HOOK, imported once per dotted path.
        self.commit_hooks: dict[str, Callable[..., bool]] = {}
        #: Health-check pings in flight, one per pool at a time.
        self.health_pings: dict[str, Any] = {}
        #: The monitoring sampler of this process, once started.
        self.sampler: _Sampler | None = None
        #: Per pool with REPLICAS: what is known of each replica, and the choice
        #: among them; and the thread that samples them (``mingus_sessions.replicas``).
        self.replica_routers: dict[str, ReplicaRouter] = {}
        self.replica_sampler: _Sampler | None = None
        #: Set by the pytest plugin while it is active: asked before a pool
        #: hands out a connection whether the running test may use the database.
        self.connect_guard: Callable[[str], None] | None = None
        #: The debug-toolbar panel's listeners on the engines, while some request
        #: is instrumented by it; None otherwise (and always without the toolbar).
        self.panel_listeners: _PanelListeners | None = None
        #: ``mingus_sessions.otel.use_providers``: the (tracer, meter) providers to
        #: emit through instead of OpenTelemetry's global ones; None for those.
        self.otel_providers: tuple[Any, Any] | None = None
        #: OpenTelemetry instruments, one set per (meter provider, with the
        #: experimental conventions or not). Never forgotten: a provider cannot
        #: take an instrument back, and their callbacks read the pools built since.
        self.otel_instruments: list[tuple[Any, bool, Any]] = []

    # -- the three events --------------------------------------------------------------------

    def after_fork_in_child(self) -> None:
        """Make the child's state its own (Celery prefork, gunicorn --preload, multiprocessing).

        Locks may have been held by parent threads that do not exist in the
        child. The child must neither use nor close the parent's connections:
        closing a libpq connection sends a Terminate over the socket the parent
        still uses, so each pool is dropped with ``close=False`` and kept
        referenced. Breakers keep what they learnt about the database.
        """
        self.lock = threading.RLock()
        for entry in list(self.pools.values()):
            self.orphaned_pools.append(entry.engine.pool)
            entry.engine.dispose(close=False)
            entry.probe.after_fork()
        # The parent's event loops do not run in the child: their engines'
        # connections are the parent's, dropped unclosed as the sync ones are.
        for entries in list(self.async_pools.values()):
            for async_entry in entries.values():
                self.orphaned_pools.append(async_entry.engine.sync_engine.pool)
                async_entry.engine.sync_engine.dispose(close=False)
        self.async_pools = weakref.WeakKeyDictionary()
        self.async_tasks = set()
        self.async_generation += 1
        renew_breaker_locks()
        if self.shared_breakers is not None:
            self.shared_breakers.after_fork()
        # The parent's open sessions stay the parent's; the counters are kept.
        self.sessions.active_sessions = 0
        self.transactions.after_fork()
        # The sampler thread and the pings in flight run in threads the child
        # does not have: left in place, they would never finish.
        self.sampler = None
        self.health_pings.clear()
        # The replicas' sampler thread is the parent's: the child starts its own.
        self.replica_sampler = None
        # otel_providers and otel_instruments are kept: the SDK's providers
        # handle a fork themselves (their export threads restart in the child).
        # The requests the panel was instrumenting are the parent's.
        listeners, self.panel_listeners = self.panel_listeners, None
        if listeners is not None:
            listeners.after_fork()

    def settings_changed(self) -> None:
        """Forget what was built from the previous settings, and dispose of the engines."""
        with self.lock:
            self.config = None
            self.async_generation += 1
            self.breakers.clear()
            self.shared_breakers = None
            self.joined_engines.clear()
            self.request_pool = None
            self.commit_hooks.clear()
            self.replica_routers = {}
            replica_sampler, self.replica_sampler = self.replica_sampler, None
            # otel_providers and otel_instruments are not settings: kept. The
            # engines rebuilt below read OPENTELEMETRY afresh.
        if replica_sampler is not None:
            replica_sampler.halt()
        self.forget_panel_listeners()
        self.dispose_engines()

    def reset(self) -> None:
        """A test's clean slate; the settings cache is left to ``override_settings``."""
        with self.lock:
            self.async_generation += 1
            self.breakers.clear()
            self.shared_breakers = None
            sampler, self.sampler = self.sampler, None
            replica_sampler, self.replica_sampler = self.replica_sampler, None
            self.replica_routers = {}
            self.health_pings.clear()
            self.tables.clear()
            self.table_metadata.clear()
            # otel_providers is the test's own choice (as connect_guard is), and
            # otel_instruments cannot be taken back from their providers: kept.
        self.forget_panel_listeners()
        self.sessions.reset()
        self.transactions.reset()
        # This thread's context only: the test's. Other threads' end with them.
        forget_positions()
        for stopping in (sampler, replica_sampler):
            if stopping is not None:
                stopping.halt()
        self.dispose_engines()

    def forget_panel_listeners(self) -> None:
        """Take the debug-toolbar panel's listeners off every engine, and forget them.

        A request still instrumented keeps its own reference and releases it
        as usual; the next one starts a new set on the engines then in use.
        """
        with self.lock:
            listeners, self.panel_listeners = self.panel_listeners, None
        if listeners is not None:
            listeners.detach()

    # -- engines ----------------------------------------------------------------------------

    def async_entries_of(self, entry: PoolEntry) -> list[AsyncPoolEntry]:
        """The async engines of ``entry``'s pool alive now, one per event loop using it."""
        self.forget_closed_loops()
        with self.lock:
            return [
                found
                for entries in list(self.async_pools.values())
                if (found := entries.get(entry.name)) is not None and found.base is entry
            ]

    def forget_closed_loops(self) -> None:
        """Drop the async engines of loops closed without shutting down their generators.

        (``loop.close()`` alone; ``asyncio.run()`` and its kind close them
        properly.) Their connections cannot be closed from their loop any more:
        the pools are dropped, and the connections closed as they are
        garbage collected, with the driver's ResourceWarning.
        """
        with self.lock:
            for loop in [loop for loop in list(self.async_pools) if loop.is_closed()]:
                for found in self.async_pools.pop(loop).values():
                    found.engine.sync_engine.dispose(close=False)

    def dispose_engines(self, close: bool = True) -> None:
        """Dispose of every engine and forget it; the next use builds a new one."""
        with self.lock:
            entries = list(self.pools.values())
            self.pools.clear()
            self.joined_engines.clear()
        for entry in entries:
            if not close:
                self.orphaned_pools.append(entry.engine.pool)
            entry.engine.dispose(close=close)


#: The one registry of this process.
state = ProcessState()

# A bound method, so that a test's own ProcessState never receives the hook.
os.register_at_fork(after_in_child=state.after_fork_in_child)
