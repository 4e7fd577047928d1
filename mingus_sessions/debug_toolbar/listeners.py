"""The engine listeners of the debug-toolbar panel, on while some request is instrumented.

SQLAlchemy engine events are the panel's only way in: statements
(``before_cursor_execute``, ``after_cursor_execute``, ``handle_error``),
transactions and savepoints (``begin``, ``commit``, ``rollback``,
``savepoint``, ``release_savepoint``, ``rollback_savepoint``) and checkouts (the
pool's ``checkout``). They are added to every pool's engine, and to the joined
engines on Django's connections, when the first instrumented request starts
(:func:`start_listening`), to engines built while one runs (the registry's
``panel_listeners.watch``), and taken off when the last one ends
(:meth:`Listeners.release`): outside a toolbar request the engines carry no
listener of the panel, and none of the toolbar's code runs. Each listener
hands its event to the :class:`~.recording.Recording` of the request in whose
context it fires, or does nothing when there is none (another request's
statement, while some toolbar request runs).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from time import perf_counter
from typing import Any

from sqlalchemy import Engine, event

from .._core.pools import ACQUIRE_STARTED
from .._core.state import state
from .recording import Source, current

__all__ = ["Listeners", "start_listening"]

logger = logging.getLogger("mingus_sessions")

#: The connection events recorded, and whether the listener must run before
#: the engine's own: a transaction is open before SQLite's ``begin`` listener
#: emits its BEGIN, so that statement is counted in it.
_CONNECTION_EVENTS = (
    ("before_cursor_execute", False),
    ("after_cursor_execute", False),
    ("handle_error", False),
    ("begin", True),
    ("commit", False),
    ("rollback", False),
    ("savepoint", False),
    ("release_savepoint", False),
    ("rollback_savepoint", False),
)


def _recorded(source: Source, name: str) -> Callable[..., None]:
    """The listener that hands event ``name`` of ``source``'s engine to the request's recording."""

    def listener(*args: Any) -> None:
        recording = current.get()
        if recording is None:
            return
        try:
            getattr(recording, name)(source, *args)
        except Exception:
            # The toolbar must never break the request it shows.
            logger.warning(
                "The debug-toolbar panel could not record a %s event of pool %s",
                name,
                source[0],
                exc_info=True,
            )

    listener.__name__ = f"_toolbar_{name}"
    return listener


def _checked_out(source: Source) -> Callable[..., None]:
    """The pool's ``checkout`` listener: how long the caller waited, when the pool timed it."""

    def listener(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        recording = current.get()
        if recording is None:
            return
        # The queue pool notes when a checkout began while MONITORING is on;
        # this listener runs before the metrics' own, which takes the note away.
        started = record.__dict__.get(ACQUIRE_STARTED)
        wait = None if started is None else perf_counter() - started
        try:
            recording.checkout(source, wait)
        except Exception:
            logger.warning(
                "The debug-toolbar panel could not record a checkout of pool %s",
                source[0],
                exc_info=True,
            )

    listener.__name__ = "_toolbar_checkout"
    return listener


class _EngineTap:
    """The panel's listeners on one engine, each labelled with the engine's pool."""

    def __init__(self, engine: Engine, pool: str, joined: bool) -> None:
        self.engine = engine
        source = (pool, joined)
        self._listeners: list[tuple[str, Callable[..., None], bool]] = [
            (name, _recorded(source, name), first) for name, first in _CONNECTION_EVENTS
        ]
        if not joined:
            # A joined engine borrows Django's connection: nothing to wait for.
            self._listeners.append(("checkout", _checked_out(source), True))
        # A listener switches its engine (connection events) or dialect
        # (handle_error) onto SQLAlchemy's event path for good: a flag that
        # removing the listener leaves set. Engines that were off it (joined
        # engines, pools without connection listeners) are put back.
        self._had_events = (engine._has_events, engine.dialect._has_events)

    def install(self) -> None:
        for name, listener, first in self._listeners:
            event.listen(self.engine, name, listener, insert=first)

    def remove(self) -> None:
        for name, listener, _first in self._listeners:
            if event.contains(self.engine, name, listener):
                event.remove(self.engine, name, listener)
        engine_events, dialect_events = self._had_events
        if not engine_events:
            self.engine._has_events = False
        if not dialect_events:
            self.engine.dialect._has_events = False


class Listeners:
    """The taps on every engine while at least one request is instrumented.

    Kept by the registry (``state.panel_listeners``), which tells it of
    engines built meanwhile (:meth:`watch`) and takes it off every engine on
    a settings change, a test's reset or a fork (:meth:`detach`).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._taps: dict[int, _EngineTap] = {}
        self._detached = False

    def _tap(self, engine: Engine, pool: str, joined: bool) -> None:
        # Under self._lock.
        if self._users and not self._detached and id(engine) not in self._taps:
            tap = _EngineTap(engine, pool, joined)
            tap.install()
            self._taps[id(engine)] = tap

    def _remove_all(self) -> None:
        # Under self._lock.
        taps, self._taps = self._taps, {}
        for tap in taps.values():
            tap.remove()

    def watch(self, engine: Engine, pool: str, *, joined: bool) -> None:
        """Listen on ``engine`` too if a request is instrumented now (a new engine)."""
        with self._lock:
            self._tap(engine, pool, joined)

    def _use(self) -> None:
        with self._lock:
            self._users += 1

    def _listen_on(self, engines: list[tuple[Engine, str, bool]]) -> None:
        with self._lock:
            for engine, pool, joined in engines:
                self._tap(engine, pool, joined)

    def release(self) -> None:
        """One instrumented request ended; the last one takes every listener off."""
        with self._lock:
            self._users -= 1
            if self._users <= 0:
                self._users = 0
                self._remove_all()

    def detach(self) -> None:
        """Take every listener off now; requests still running release as usual."""
        with self._lock:
            self._detached = True
            self._remove_all()

    def after_fork(self) -> None:
        """In a forked child: the parent's requests are not the child's, nor is its lock."""
        self._lock = threading.Lock()
        self._users = 0
        self.detach()


def start_listening() -> Listeners:
    """Count one more instrumented request, listening on every engine built so far.

    Returns the :class:`Listeners` that the request must :meth:`~Listeners.release`.
    """
    with state.lock:
        listeners = state.panel_listeners
        if not isinstance(listeners, Listeners):
            listeners = Listeners()
            state.panel_listeners = listeners
        listeners._use()
        engines = [(entry.engine, entry.name, False) for entry in state.pools.values()]
        engines += [(engine, key[0], True) for key, engine in state.joined_engines.items()]
    listeners._listen_on(engines)
    return listeners
