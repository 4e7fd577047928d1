"""A sync-only middleware, as many third-party ones are (no ``async_capable``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def sync_only_middleware(get_response: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def middleware(request: Any) -> Any:
        return get_response(request)

    return middleware
