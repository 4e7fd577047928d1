"""Module locks that a forked child must not inherit in the state the parent left them.

Plain Python. A thread of the parent may hold a lock at the moment of
``fork()``; that thread does not exist in the child, so a lock copied as it was
would stay held there forever.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["renew_lock_in_child"]


def renew_lock_in_child(
    namespace: dict[str, Any], name: str = "_lock", factory: Callable[[], Any] = threading.Lock
) -> None:
    """Give ``namespace[name]`` (a module's ``globals()``) a new lock in every forked child."""

    def renew() -> None:
        namespace[name] = factory()

    os.register_at_fork(after_in_child=renew)
