"""Helpers shared by the test modules (not a test module itself)."""

from __future__ import annotations

import threading

from sqlalchemy import text

from mingus_sessions import session_scope


class Holder:
    """A thread that holds a scope (and so a connection) of ``pool`` until released."""

    def __init__(self, pool: str) -> None:
        self.pool = pool
        self.holding = threading.Event()
        self.release = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.holding.wait(10), "the holder never got its connection"

    def _run(self) -> None:
        try:
            with session_scope(self.pool) as session:
                session.execute(text("SELECT 1"))
                self.holding.set()
                self.release.wait(30)
        except BaseException as exc:
            self.error = exc
            self.holding.set()

    def stop(self) -> None:
        self.release.set()
        self.thread.join(30)
        assert not self.thread.is_alive()
        assert self.error is None, self.error
