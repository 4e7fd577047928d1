"""Request-scoped sessions: ``SessionMiddleware``.

Each request gets a scope of the default pool whose session opens on first use
(``request.db_session`` or ``current_session()``), so a request that never
touches SQLAlchemy checks out no connection. When the response is ready the
session commits if the status is below 400 (or ``REQUEST_COMMIT_HOOK`` says
so) and rolls back otherwise; it is always closed. A streaming response keeps
its session until the response is closed, and commits only if the stream was
read to the end.

Hooks, in Django's order: ``__call__``/``__acall__`` wraps the rest of the
chain; ``process_exception`` records a view's exception, which Django then
turns into a response. A failure at commit is raised from the middleware, so
Django's handler logs it and answers 500: the client never sees a success that
was not committed.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.http import HttpRequest, HttpResponseBase
from django.utils.functional import SimpleLazyObject
from django.utils.module_loading import import_string

from . import conf
from .metrics import monitor
from .sessions import LazyScope

__all__ = ["SessionMiddleware"]

logger = logging.getLogger("mingus_sessions")

CommitHook = Callable[[HttpRequest, HttpResponseBase], bool]

_hooks: dict[str, CommitHook] = {}


def _commit_hook() -> CommitHook | None:
    path = conf.get_config().request_commit_hook
    if path is None:
        return None
    hook = _hooks.get(path)
    if hook is None:
        hook = _hooks[path] = import_string(path)
    return hook


def _should_commit(request: HttpRequest, response: HttpResponseBase) -> bool:
    if getattr(request, "_mingus_sessions_exception", None) is not None:
        return False
    hook = _commit_hook()
    if hook is not None:
        return bool(hook(request, response))
    return response.status_code < 400


class SessionMiddleware:
    """Give every request a lazily opened session of the default pool."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self._is_async = iscoroutinefunction(get_response)
        if self._is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self._is_async:
            return self.__acall__(request)
        scope = self._begin(request)
        token = scope.activate()
        try:
            response: HttpResponseBase = self.get_response(request)
        except BaseException as exc:
            scope.finish(commit=False, exc=exc)
            raise
        finally:
            scope.deactivate(token)
        return self._end(scope, request, response)

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        scope = self._begin(request)
        token = scope.activate()
        try:
            response: HttpResponseBase = await self.get_response(request)
        except BaseException as exc:
            if scope.has_work:
                await sync_to_async(scope.finish)(commit=False, exc=exc)
            raise
        finally:
            scope.deactivate(token)
        if response.streaming:
            return self._defer_to_close(scope, request, response)
        if scope.has_work:
            # Commit and close in the thread that ran the sync view, off the loop.
            commit = _should_commit(request, response)
            await sync_to_async(scope.finish)(commit=commit)
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> None:
        """Remember the view's exception: its response must not commit."""
        request._mingus_sessions_exception = exception  # type: ignore[attr-defined]

    @staticmethod
    def _begin(request: HttpRequest) -> LazyScope:
        if not monitor.is_monitoring():
            # A server process starts its sampler with its first request: after
            # any fork (gunicorn --preload), and never in management commands.
            monitor.ensure_monitoring("web")
        scope = LazyScope()
        request.db_session = SimpleLazyObject(lambda: scope.session)  # type: ignore[attr-defined]
        return scope

    def _end(
        self, scope: LazyScope, request: HttpRequest, response: HttpResponseBase
    ) -> HttpResponseBase:
        if response.streaming:
            return self._defer_to_close(scope, request, response)
        if scope.has_work:
            scope.finish(commit=_should_commit(request, response))
        return response

    @staticmethod
    def _defer_to_close(
        scope: LazyScope, request: HttpRequest, response: HttpResponseBase
    ) -> HttpResponseBase:
        """Finish when the server closes the response, after the last chunk (or a disconnect)."""
        state = {"complete": False}
        content = response.streaming_content  # type: ignore[attr-defined]

        if response.is_async:  # type: ignore[attr-defined]

            async def watch_async() -> AsyncIterator[Any]:
                async for chunk in content:
                    yield chunk
                state["complete"] = True

            response.streaming_content = watch_async()  # type: ignore[attr-defined]
        else:

            def watch() -> Iterator[Any]:
                yield from content
                state["complete"] = True

            response.streaming_content = watch()  # type: ignore[attr-defined]

        close = response.close

        finished = False

        def close_and_finish() -> None:
            nonlocal finished
            if finished:  # servers and test clients may close a response twice
                close()
                return
            finished = True
            try:
                close()
            finally:
                if scope.has_work:
                    commit = state["complete"] and _should_commit(request, response)
                    if not state["complete"]:
                        logger.info(
                            "Streaming response of %s ended early; rolling back its session",
                            request.path,
                        )
                    scope.finish(commit=commit)

        response.close = close_and_finish  # type: ignore[method-assign]
        return response
