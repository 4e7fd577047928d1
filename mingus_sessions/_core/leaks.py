"""Where each checkout came from, and the reports of connections held too long.

A scope notes the frame that opened it (:func:`note_opening`); a checkout
outside any scope captures its stack up front (:func:`capture_stack`). Either
becomes a traceback's lines only if the connection is reported as a leak
(:func:`describe_site`). :class:`LeakReports` is the part of
:class:`~.recorder.PoolRecorder` that finds and reports those connections.
"""

from __future__ import annotations

import logging
import sys
import time
from _thread import get_ident
from types import CodeType, FrameType
from typing import Any, Protocol

from .frames import Opened

__all__ = ["STACK_FRAMES", "LeakReports", "Site", "capture_stack", "describe_site", "note_opening"]

leak_logger = logging.getLogger("mingus_sessions.leaks")

#: Frames kept of the stack that checked a connection out.
STACK_FRAMES = 10

# Frames in these packages are skipped when recording who checked a connection out.
_LIBRARY_PATHS = tuple(
    module.__file__.rsplit("/", 1)[0]
    for module in (sys.modules["sqlalchemy"], sys.modules["mingus_sessions"])
    if module.__file__
)


class _LibraryFiles(dict[str, bool]):
    """Whether a source file is in SQLAlchemy or this package, by path, learnt as frames come.

    The stack walks below look each frame's file up here: a dict hit, where
    ``str.startswith`` would be a call per frame on every checkout.
    """

    def __missing__(self, filename: str) -> bool:
        inside = self[filename] = filename.startswith(_LIBRARY_PATHS)
        return inside


#: Outside the registry on purpose: what it learns (where a file lives) holds in
#: every process and under any settings, so no fork, change or reset concerns it.
_in_library = _LibraryFiles()

#: A stack captured whole, innermost first: (code object, instruction offset) per frame.
Stack = tuple[tuple[CodeType, int], ...]
#: What a checkout remembers of where it came from (see :func:`describe_site`).
Site = Stack | Opened


def note_opening(frame: FrameType | None) -> Opened | None:
    """The first frame from ``frame`` up outside SQLAlchemy and this package.

    This runs for every scope, so it keeps three numbers and walks no further:
    while the scope is open, the frame that opened it is still running, so its
    callers can be read from the thread's live stack if a leak is reported
    (:func:`describe_site`). No frame is kept: it would keep its locals, and
    with them a leaked session and its connection, alive.
    """
    while frame is not None:
        code = frame.f_code
        if not _in_library[code.co_filename]:
            # f_lineno would decode the line table on every call; the offset
            # is free, and is turned into a line only if a leak is reported.
            return (code, frame.f_lasti, get_ident())
        frame = frame.f_back
    return None


def capture_stack(frame: FrameType | None) -> Stack:
    """The frames from ``frame`` up that are outside SQLAlchemy and this package.

    For checkouts outside a scope (``get_session()``, ``engine.connect()``),
    which have no opening frame to come back to: the walk is paid up front.
    """
    found: list[tuple[CodeType, int]] = []
    left = STACK_FRAMES  # counted here: len(found) per frame would be a call per frame
    while frame is not None:
        code = frame.f_code
        if not _in_library[code.co_filename]:
            found.append((code, frame.f_lasti))
            left -= 1
            if not left:
                break
        frame = frame.f_back
    return tuple(found)


def _line_of(code: CodeType, offset: int) -> int:
    for start, end, line in code.co_lines():
        if start <= offset < end and line is not None:
            return line
    return code.co_firstlineno


def _format_frames(frames: Stack) -> str:
    return "\n".join(
        f'  File "{code.co_filename}", line {_line_of(code, offset)}, in {code.co_name}'
        for code, offset in frames
    )


def describe_site(site: Site | None) -> str:
    """The stack a checkout came from, as a traceback's lines (innermost first)."""
    if not site:
        return "  (no caller outside SQLAlchemy)"
    if not isinstance(site[0], CodeType):
        return _format_frames(site)  # type: ignore[arg-type]
    code, offset, thread = site  # type: ignore[misc]
    frames: list[tuple[CodeType, int]] = [(code, offset)]
    running = sys._current_frames().get(thread)
    while running is not None and running.f_code is not code:
        running = running.f_back
    if running is None:
        return (
            _format_frames(tuple(frames))
            + "\n  (that function has returned since, so its callers are not known)"
        )
    # The opening frame is still running, so its callers are still where they
    # were when it opened the session.
    caller = running.f_back
    while caller is not None and len(frames) < STACK_FRAMES:
        if not _in_library[caller.f_code.co_filename]:
            frames.append((caller.f_code, caller.f_lasti))
        caller = caller.f_back
    return _format_frames(tuple(frames))


class _LeakState(Protocol):
    """What :class:`LeakReports` reads and writes: :class:`~.recorder.PoolRecorder`'s slots."""

    name: str
    leak_threshold: float | None
    leaks: int
    _outstanding: dict[int, list[Any]]

    def _report_leak(self, out: list[Any], held: float) -> None: ...


class LeakReports:
    """How long each connection checked out now has been held, and the reports of leaks.

    A part of :class:`~.recorder.PoolRecorder`, whose slots hold the state
    (``_outstanding``: id(record) -> [perf_counter at checkout, site, reported
    as a leak yet], a list, the cheapest mutable record). No slot of its own,
    so the recorder's layout stays one class's.
    """

    __slots__ = ()

    def checked_out_for(self: _LeakState, now: float | None = None) -> list[float]:
        """Seconds each connection checked out right now has been held."""
        current = time.perf_counter() if now is None else now
        return [current - out[0] for out in list(self._outstanding.values())]

    def scan_leaks(self: _LeakState, now: float | None = None) -> int:
        """Report connections held past the threshold (once each); return how many were new."""
        threshold = self.leak_threshold
        if threshold is None:
            return 0
        current = time.perf_counter() if now is None else now
        found = 0
        for out in list(self._outstanding.values()):
            if not out[2] and current - out[0] >= threshold:
                self._report_leak(out, current - out[0])
                found += 1
        return found

    def _report_leak(self: _LeakState, out: list[Any], held: float) -> None:
        out[2] = True
        self.leaks += 1
        leak_logger.warning(
            "Connection of pool %s held for %.1f s (leak threshold %.1f s); it was checked "
            "out at:\n%s",
            self.name,
            held,
            self.leak_threshold,
            describe_site(out[1]),
        )
