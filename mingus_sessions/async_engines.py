"""One async engine per pool per event loop, built from the pool's sync engine's settings.

An asyncio connection belongs to the loop that opened it: used from another
loop it fails ("attached to a different loop"), and it can only be closed
from its own. So each running loop gets its own engine of each pool it uses
(``asyncio.run()`` calls, ``async_to_sync``, a loop per test, a thread with
its own loop), and the engine is disposed of, from inside that loop, when the
loop shuts down: an async generator that the loop finalizes in
``shutdown_asyncgens()`` (which ``asyncio.run()``, asgiref and pytest-asyncio
all call) closes it. The engines share their pool's recorder, breaker and
settings with the sync engine; they live in the registry
(``state.async_pools``), so a fork, a settings change and a test's reset reach
them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from . import conf
from ._core.engine_args.asynchronous import async_engine_spec
from ._core.entry import AsyncPoolEntry
from ._core.guarded_session import GuardedAsyncSession
from ._core.replicas import read_only_engine
from ._core.state import state
from .engines import get_entry, instrument

__all__ = ["get_async_engine", "get_async_entry"]

logger = logging.getLogger("mingus_sessions")


def get_async_entry(pool: str | None = None) -> AsyncPoolEntry:
    """The async entry of ``pool`` for the running event loop, built if needed.

    Raises ``RuntimeError`` outside a running loop (an async engine cannot be
    used there).
    """
    loop = asyncio.get_running_loop()
    entries = state.async_pools.get(loop)
    if entries is not None:
        entry = entries.get(pool if pool is not None else conf.get_config().default_pool)
        if (
            entry is not None
            and entry.generation == state.async_generation
            and not entry.base.stale
            and state.pools.get(entry.name) is entry.base
        ):
            return entry
    return _build(loop, conf.get_config().default_pool if pool is None else pool)


def async_read_only_sessionmaker(entry: AsyncPoolEntry) -> async_sessionmaker[AsyncSession]:
    """Async sessions of ``entry``'s pool whose transactions refuse writes (made once)."""
    maker = entry.read_only_sessionmaker
    if maker is None:
        engine = AsyncEngine(read_only_engine(entry.engine.sync_engine, entry.base.spec.vendor))
        maker = entry.read_only_sessionmaker = async_sessionmaker(
            bind=engine, expire_on_commit=False, class_=GuardedAsyncSession
        )
    return maker


def get_async_engine(pool: str | None = None) -> AsyncEngine:
    """The pool's :class:`~sqlalchemy.ext.asyncio.AsyncEngine` for the running event loop."""
    return get_async_entry(pool).engine


def _build(loop: asyncio.AbstractEventLoop, name: str) -> AsyncPoolEntry:
    base = get_entry(name)
    state.forget_closed_loops()
    with state.lock:
        entries = state.async_pools.setdefault(loop, {})
        old = entries.get(name)
        if (
            old is not None
            and old.base is base
            and old.generation == state.async_generation
            and not base.stale
        ):
            return old
        spec = async_engine_spec(base.spec, base.config)
        engine = create_async_engine(spec.url, **spec.kwargs)
        instrument(
            engine.sync_engine,
            spec,
            base.probe,
            base.config,
            guarded=True,
            telemetry=base.telemetry,
        )
        entry = AsyncPoolEntry(
            name=name,
            base=base,
            engine=engine,
            sessionmaker=async_sessionmaker(
                bind=engine, expire_on_commit=False, class_=GuardedAsyncSession
            ),
            generation=state.async_generation,
        )
        _keep_with_loop(loop, _dispose_with_loop(loop, entry), entry)
        entries[name] = entry
    if old is not None:
        # Built under older settings, or for a database no longer used: close
        # its connections from this loop, their own, without waiting here.
        _dispose_soon(loop, old.engine)
    return entry


def _dispose_with_loop(loop: asyncio.AbstractEventLoop, entry: AsyncPoolEntry) -> Any:
    """Start an async generator that disposes of ``entry``'s engine when ``loop`` shuts down.

    The loop registers an async generator when it is first iterated, and
    ``shutdown_asyncgens()`` closes the ones still open, running their
    ``finally`` inside the loop: where the engine's connections can be closed.
    The entry is forgotten then too, so that a process running many short
    loops (``async_to_sync`` in a sync view) keeps none of them.
    """

    # Weakly: an entry whose value held its loop would keep the weak key alive.
    loop_ref = weakref.ref(loop)

    async def closer() -> AsyncIterator[None]:
        try:
            yield
        finally:
            _forget(loop_ref(), entry)
            try:
                await entry.engine.dispose()
            except Exception:  # the loop is going away: log, never raise into its shutdown
                logger.warning(
                    "Closing the async engine of pool %s failed", entry.name, exc_info=True
                )

    generator = closer()
    step: Any = generator.__anext__()
    with contextlib.suppress(StopIteration):
        step.send(None)  # runs to the yield: nothing is awaited before it
    return generator


#: The attribute of a loop holding its engines' closers (see _keep_with_loop).
_CLOSERS = "_mingus_sessions_closers"


def _keep_with_loop(loop: asyncio.AbstractEventLoop, closer: Any, entry: AsyncPoolEntry) -> None:
    """Keep ``closer`` alive as long as ``loop``, without keeping ``loop`` alive.

    The loop holds its async generators weakly, and a generator holds its
    loop (its finalizer is the loop's): kept in the registry's entry, it
    would keep the registry's weak key, the loop, alive for ever. Kept on the
    loop, it is a cycle the garbage collector frees with the loop. A loop
    that takes no attribute (a compiled one) keeps it in the entry: such
    loops serve a whole process.
    """
    try:
        closers = loop.__dict__.setdefault(_CLOSERS, [])
    except AttributeError:
        entry.closer = closer
        return
    closers.append(closer)


def _forget(loop: asyncio.AbstractEventLoop | None, entry: AsyncPoolEntry) -> None:
    if loop is None:
        return
    with state.lock:
        entries = state.async_pools.get(loop)
        if entries is None:
            return
        if entries.get(entry.name) is entry:
            del entries[entry.name]
        if not entries:
            del state.async_pools[loop]


def _dispose_soon(loop: asyncio.AbstractEventLoop, engine: AsyncEngine) -> None:
    task = loop.create_task(engine.dispose())
    state.async_tasks.add(task)
    task.add_done_callback(state.async_tasks.discard)
