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
turns into a response. That exception ends the scope as it would end a
``session_scope()`` (rolled back, counted as a failed session and, for a
connection failure, by the pool's circuit breaker), but it is not raised again.
A failure at commit, or in ``REQUEST_COMMIT_HOOK``, is raised from the
middleware once the session is closed, so Django's handler logs it and answers
500: the client never sees a success that was not committed.

A request that never uses its session must cost next to nothing: the benchmark
allows 2% of a request to a view without SQLAlchemy, about 1.5 µs, and most of
that goes in cache misses, since the rest of the request has evicted whatever
this code touched last time. So the sync path makes no Python call of its own;
it creates one object, a :class:`RequestSession`, which is at once
``request.db_session``, the request's scope and its frame in the context, and
which writes nothing when created; and it reads no attribute through that
object's ``__getattr__`` hook: whether the scope has work is its class.
"""

from __future__ import annotations

import logging
from asyncio import _get_running_loop
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any

from asgiref.sync import async_to_sync, iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.utils.module_loading import import_string

from . import conf, monitor
from ._core.errors import ConfigurationError, SessionError
from ._core.frames import active_scope, enter, leave
from ._core.state import state
from .asessions import AsyncRequestSession
from .request_session import RequestSession, new_request_session, request_pool
from .sessions import LazyScope

__all__ = ["RequestSession", "SessionMiddleware"]

logger = logging.getLogger("mingus_sessions")

CommitHook = Callable[[HttpRequest, HttpResponseBase], bool]


def _commit_hook() -> CommitHook | None:
    path = conf.get_config().request_commit_hook
    if path is None:
        return None
    hook = state.commit_hooks.get(path)
    if hook is None:
        hook = state.commit_hooks[path] = import_string(path)
    return hook


def _should_commit(request: HttpRequest, response: HttpResponseBase) -> bool:
    hook = _commit_hook()
    if hook is not None:
        return bool(hook(request, response))
    return response.status_code < 400


def _ending(
    request: HttpRequest, response: HttpResponseBase, complete: bool
) -> tuple[bool, BaseException | None, BaseException | None]:
    """How a request's scope ends: whether it commits, the exception it ends with, and the
    hook's failure to raise once it has ended.

    ``complete`` is false for a stream the client left early: it rolls back
    without asking the hook. The view's exception, recorded by
    ``process_exception``, ends the scope as it ends a ``session_scope()``: a
    failed session, and a failure for the pool's circuit breaker if it is a
    connection-class one. A hook that raises ends the scope with its exception
    (rolled back), which is then raised, or its translation if it is a
    database one.
    """
    failure = getattr(request, "_mingus_sessions_exception", None)
    if failure is not None:
        return False, failure, None
    try:
        return complete and _should_commit(request, response), None, None
    except BaseException as hook_error:  # noqa: BLE001 - raised once the scope has ended
        return False, hook_error, hook_error


def _raise_after_end(
    error: SessionError, exc: BaseException | None, hook_error: BaseException | None
) -> None:
    """Raise what ending the scope raised, unless it is the view's exception translated.

    That one is dropped: Django has already turned the exception into a
    response (perhaps a handler's own error page) and logged it.
    """
    if exc is None or hook_error is not None or error.__cause__ is not exc:
        raise error


def _finish(
    scope: LazyScope, request: HttpRequest, response: HttpResponseBase, complete: bool = True
) -> None:
    """Commit or roll back the request's scope, and close it whatever happens on the way.

    Called only for a scope with work; see :func:`_ending` for the outcome.
    Any error from the scope but the view's own exception is raised.
    """
    commit, exc, hook_error = _ending(request, response, complete)
    try:
        scope.finish(commit=commit, exc=exc)
    except SessionError as error:
        _raise_after_end(error, exc, hook_error)
    if hook_error is not None:
        raise hook_error


async def _afinish(
    scope: AsyncRequestSession,
    request: HttpRequest,
    response: HttpResponseBase,
    complete: bool = True,
) -> None:
    """:func:`_finish` for the request's async scope, before the response is returned."""
    commit, exc, hook_error = _ending(request, response, complete)
    try:
        await scope.end(commit=commit, exc=exc)
    except SessionError as error:
        _raise_after_end(error, exc, hook_error)
    if hook_error is not None:
        raise hook_error


_get_active = active_scope.get
_object_setattr = object.__setattr__
_new = RequestSession.__new__


def _read_settings() -> None:
    """Read what the middleware needs of the settings, once per settings (the registry keeps it).

    With invalid settings a request that never uses its session still gets an
    answer (the health endpoint's JSON, say); one that does gets their
    ConfigurationError when its session opens. They are read again at the next
    request.
    """
    try:
        request_pool()
    except ConfigurationError:
        state.request_monitoring = False


def _warn_sync_under_asgi() -> None:
    """Say once per settings why an ASGI request reached the middleware in sync mode.

    Django runs a middleware in sync mode when the one after it (closer to the
    view) is sync-only: async views then get no ``request.adb_session``, and
    each request hops between a thread and the loop.
    """
    from django.conf import settings

    names = [str(path) for path in settings.MIDDLEWARE]
    ours = next((i for i, path in enumerate(names) if path.endswith(".SessionMiddleware")), -1)
    sync_only = [
        path
        for path in names[ours + 1 :]
        if not getattr(import_string(path), "async_capable", False)
    ]
    logger.warning(
        "SessionMiddleware runs in sync mode under ASGI%s: async views get no "
        "request.adb_session (asession_scope() works in any mode). Make the middleware "
        "after it async capable, or list SessionMiddleware after it.",
        f" because {', '.join(sync_only)} after it is sync-only" if sync_only else "",
    )


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
        # _begin() and new_request_session(), written out: on this path a
        # Python call costs as much as the rest of what the middleware does.
        if state.request_pool is None:  # the first request, or the settings changed
            _read_settings()
            if isinstance(request, ASGIRequest):
                _warn_sync_under_asgi()
        if state.sampler is None and state.request_monitoring:
            # A server process starts its sampler with its first request: after
            # any fork (gunicorn --preload), and never in management commands.
            monitor.ensure_monitoring("web")
        scope = _new(RequestSession)
        parent = _get_active()
        if parent is not None:  # served inside a scope (a test's sa_session)
            _object_setattr(scope, "parent", parent)
        request.db_session = scope  # type: ignore[attr-defined]
        token = enter(scope)
        try:
            response: HttpResponseBase = self.get_response(request)
        except BaseException as exc:
            # Out of the scope first, as on success: what runs after it ends
            # (on_commit callbacks) must not find it active.
            leave(token)
            scope.finish(commit=False, exc=exc)
            raise
        leave(token)
        # A plain HttpResponse never streams: skip the lookup of its class attribute.
        if type(response) is not HttpResponse and response.streaming:
            return self._defer_to_close(scope, request, response)
        if scope._session is not None or scope.early is not None:  # it has work
            _finish(scope, request, response)
        return response

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        scope = self._begin(request)
        # The async view's scope sits inside the sync one: both are found by
        # their own kind, and leaving the context once leaves both.
        ascope = AsyncRequestSession(scope)
        request.adb_session = ascope  # type: ignore[attr-defined]
        token = enter(ascope)
        try:
            outer = scope.parent  # served inside a scope: a test's sa_asession?
            while outer is not None and not (
                outer.is_async and outer.pool == ascope.pool and not outer.finished
            ):
                outer = outer.parent
            if outer is not None:
                await ascope.nest_in(outer)
            response: HttpResponseBase = await self.get_response(request)
        except BaseException as exc:
            # A view's exception, or the request cancelled (the client went
            # away): both scopes roll back, and the connection goes back.
            leave(token)
            try:
                if ascope.has_work:
                    await ascope.end(commit=False, exc=exc)
            finally:
                if scope.has_work:
                    await sync_to_async(scope.finish)(commit=False, exc=exc)
            raise
        leave(token)
        if response.streaming:
            # The async scope is looked at when the stream ends, not now: a
            # stream may open it while it runs.
            return _finish_async_at_end(
                ascope, request, self._defer_to_close(scope, request, response)
            )
        if ascope.has_work:
            try:
                # Committed before the response is returned: a failed commit
                # is raised here, and the client gets a 500, never a 2xx.
                await _afinish(ascope, request, response)
            except BaseException:
                if scope.has_work:  # nor does the sync session's work commit then
                    await sync_to_async(scope.finish)(commit=False)
                raise
        if scope.has_work:
            # Commit and close in the thread that ran the sync view, off the loop.
            await sync_to_async(_finish)(scope, request, response)
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> None:
        """Remember the view's exception: its response must not commit."""
        request._mingus_sessions_exception = exception  # type: ignore[attr-defined]

    @staticmethod
    def _begin(request: HttpRequest) -> RequestSession:
        """The request's scope, set as ``request.db_session`` (not active yet)."""
        if state.request_pool is None:
            _read_settings()
        if state.sampler is None and state.request_monitoring:
            monitor.ensure_monitoring("web")
        scope = new_request_session(_get_active())
        request.db_session = scope  # type: ignore[attr-defined]
        return scope

    @staticmethod
    def _defer_to_close(
        scope: LazyScope, request: HttpRequest, response: HttpResponseBase
    ) -> HttpResponseBase:
        """Finish when the server closes the response, after the last chunk (or a disconnect)."""
        stream = {"complete": False}
        content = response.streaming_content  # type: ignore[attr-defined]

        if response.is_async:  # type: ignore[attr-defined]

            async def watch_async() -> AsyncIterator[Any]:
                async for chunk in content:
                    yield chunk
                stream["complete"] = True

            response.streaming_content = watch_async()  # type: ignore[attr-defined]
        else:

            def watch() -> Iterator[Any]:
                yield from content
                stream["complete"] = True

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
                    complete = stream["complete"]
                    if not complete:
                        logger.info(
                            "Streaming response of %s ended early; rolling back its session",
                            request.path,
                        )
                    _finish(scope, request, response, complete)

        response.close = close_and_finish  # type: ignore[method-assign]
        return response


def _finish_async_at_end(
    scope: AsyncRequestSession, request: HttpRequest, response: HttpResponseBase
) -> HttpResponseBase:
    """End the async scope of a streaming response when its stream ends, in the event loop.

    The content becomes an async generator (served by Django's ASGI handler
    as any async stream) whose end, or early close by a client that left,
    commits or rolls back the scope, if the view or the stream opened it. A
    stream never started (the client left before the first chunk) has no
    end of its own: ``response.close()``, which the handler always calls, then
    rolls the scope back.
    """
    content = response.streaming_content  # type: ignore[attr-defined]
    is_async = response.is_async  # type: ignore[attr-defined]
    ended = False

    async def end(complete: bool) -> None:
        nonlocal ended
        if ended:
            return
        ended = True
        if scope.has_work:
            if not complete:
                logger.info(
                    "Streaming response of %s ended early; rolling back its async session",
                    request.path,
                )
            await _afinish(scope, request, response, complete)

    async def stream_then_finish() -> AsyncIterator[Any]:
        complete = False
        try:
            if is_async:
                async for chunk in content:
                    yield chunk
            else:
                # As Django's handler does with a sync stream under ASGI.
                for chunk in await sync_to_async(_all_chunks)(content):
                    yield chunk
            complete = True
        finally:
            await end(complete)

    response.streaming_content = stream_then_finish()  # type: ignore[attr-defined]
    close = response.close

    def close_and_end() -> None:
        try:
            close()
        finally:
            if not ended:
                _end_from_close(end(False))

    response.close = close_and_end  # type: ignore[method-assign]
    return response


def _end_from_close(ending: Coroutine[Any, Any, None]) -> None:
    """Run ``ending`` on the request's loop from ``response.close()``.

    Django's handler calls ``close()`` in a thread of ``sync_to_async``, from
    which ``async_to_sync`` runs a coroutine on the loop it came from; code
    that calls it on the loop itself gets the ending as a task of that loop.
    """
    loop = _get_running_loop()
    if loop is None:
        async_to_sync(_await)(ending)
        return
    task = loop.create_task(ending)
    state.async_tasks.add(task)
    task.add_done_callback(state.async_tasks.discard)


async def _await(ending: Coroutine[Any, Any, None]) -> None:
    await ending


def _all_chunks(content: Iterator[Any]) -> list[Any]:
    return list(content)
