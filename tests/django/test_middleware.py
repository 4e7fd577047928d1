"""SessionMiddleware: every exit path of a request, under WSGI and ASGI (R13, R14)."""

from __future__ import annotations

import asyncio
import copy
import inspect
import logging
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings as django_settings
from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.test import AsyncClient, Client
from django.urls import path
from sqlalchemy import event, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session

from mingus_sessions import current_session, get_circuit_breaker, get_engine, session_scope
from mingus_sessions._core.state import state
from mingus_sessions.errors import CircuitOpenError, TransactionError
from tests import views
from tests.helpers import add_unreachable_alias, admin_connection

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "other"])


def titles() -> list[str]:
    with session_scope() as session:
        return list(
            session.execute(text("SELECT title FROM testapp_note ORDER BY title")).scalars()
        )


def checked_out() -> int:
    return int(get_engine().pool.checkedout())  # type: ignore[attr-defined]


@pytest.fixture
def checkouts() -> Iterator[list[int]]:
    """Count pool checkouts of the default pool during the test."""
    counted: list[int] = []
    engine = get_engine()

    def on_checkout(*args: Any) -> None:
        counted.append(1)

    event.listen(engine, "checkout", on_checkout)
    yield counted
    event.remove(engine, "checkout", on_checkout)


# -- WSGI -------------------------------------------------------------------------------


def test_success_commits(client: Client) -> None:
    """A response below 400 commits the request's writes and returns the connection."""
    assert client.get("/write/kept/").status_code == 200
    assert titles() == ["kept"]
    assert checked_out() == 0


def test_current_session_is_the_request_session(client: Client) -> None:
    """Inside the view, current_session() is request.db_session."""
    assert client.get("/write-current/via-current/").status_code == 200
    assert titles() == ["via-current"]


@pytest.mark.parametrize("status", [400, 404, 500])
def test_error_status_rolls_back(client: Client, status: int) -> None:
    """A response of 400 or above rolls the request's writes back."""
    assert client.get(f"/write/dropped/{status}/").status_code == status
    assert titles() == []
    assert checked_out() == 0


def test_view_exception_rolls_back(caplog: pytest.LogCaptureFixture) -> None:
    """A view that raises after writing gets Django's 500 and its writes are rolled back."""
    client = Client(raise_request_exception=False)
    with caplog.at_level(logging.ERROR, logger="django.request"):
        assert client.get("/write-raise/dropped/").status_code == 500
    assert titles() == []
    assert checked_out() == 0


def test_request_without_database_checks_out_nothing(client: Client, checkouts: list[int]) -> None:
    """A request that never touches SQLAlchemy checks out no connection at all."""
    assert client.get("/no-database/").status_code == 200
    assert checkouts == []


def test_request_with_database_checks_out_once(client: Client, checkouts: list[int]) -> None:
    """A request that uses its session checks out exactly one connection."""
    client.get("/write/one/")
    assert len(checkouts) == 1


@pytest.fixture
def deferred_child_table() -> Iterator[None]:
    """A table whose foreign key is checked only at COMMIT."""
    if django_settings.DATABASES["default"]["ENGINE"].endswith("mysql"):
        pytest.skip("MySQL checks foreign keys at once: it has no deferred constraints")
    with get_engine().begin() as conn:
        conn.execute(
            text(
                "CREATE TABLE mw_child (id INTEGER PRIMARY KEY, note_id INTEGER "
                "REFERENCES testapp_note (id) DEFERRABLE INITIALLY DEFERRED)"
            )
        )
    yield
    with get_engine().begin() as conn:
        conn.execute(text("DROP TABLE mw_child"))


@pytest.mark.usefixtures("deferred_child_table")
def test_failure_at_commit_is_a_500(caplog: pytest.LogCaptureFixture) -> None:
    """A commit that fails turns into Django's 500, logged, and nothing is committed."""
    client = Client(raise_request_exception=False)
    with caplog.at_level(logging.ERROR, logger="django.request"):
        response = client.get("/orphan/")
    assert response.status_code == 500
    assert any("IntegrityError" in (r.exc_text or "") or r.exc_info for r in caplog.records)
    with session_scope() as session:
        assert session.scalar(text("SELECT count(*) FROM mw_child")) == 0
    assert checked_out() == 0


def test_commit_hook_decides(settings: Any, client: Client) -> None:
    """REQUEST_COMMIT_HOOK decides instead of the status code."""
    config = copy.deepcopy(django_settings.MINGUS_SESSIONS)
    config["REQUEST_COMMIT_HOOK"] = "tests.views.commit_when_asked"
    settings.MINGUS_SESSIONS = config
    client.get("/write/not-asked/")
    client.get("/write/asked/400/", headers={"X-Commit": "yes"})
    assert titles() == ["asked"]


def raising_commit_hook(request: HttpRequest, response: HttpResponseBase) -> bool:
    """REQUEST_COMMIT_HOOK for the tests: a hook with a bug."""
    raise RuntimeError("the commit hook failed")


@pytest.fixture
def raising_hook(settings: Any) -> None:
    config = copy.deepcopy(django_settings.MINGUS_SESSIONS)
    config["REQUEST_COMMIT_HOOK"] = f"{__name__}.raising_commit_hook"
    settings.MINGUS_SESSIONS = config


def logged(caplog: pytest.LogCaptureFixture) -> list[type[BaseException]]:
    """The classes of the exceptions Django's handler logged, in order."""
    return [
        record.exc_info[0]
        for record in caplog.records
        if record.name == "django.request" and record.exc_info and record.exc_info[0]
    ]


@pytest.mark.usefixtures("raising_hook")
def test_commit_hook_that_raises_rolls_back_and_closes(caplog: pytest.LogCaptureFixture) -> None:
    """A hook that raises: rolled back, connection returned, the hook's error logged, 500."""
    client = Client(raise_request_exception=False)
    with caplog.at_level(logging.ERROR, logger="django.request"):
        assert client.get("/write/hooked/").status_code == 500
    assert logged(caplog) == [RuntimeError]
    assert checked_out() == 0
    assert titles() == []


@pytest.mark.usefixtures("raising_hook")
def test_streaming_response_whose_commit_hook_raises(client: Client) -> None:
    """A streaming response's hook that raises at close: rolled back, connection returned."""
    response = client.get("/stream/hooked-stream/")
    assert checked_out() == 1
    with pytest.raises(RuntimeError, match="the commit hook failed"):
        # The test client closes the response once the stream is read.
        b"".join(response.streaming_content)  # type: ignore[attr-defined]
    response.close()  # a second close finishes nothing again
    assert checked_out() == 0
    assert titles() == []


def test_streaming_response_commits_after_the_last_chunk(client: Client) -> None:
    """A streaming view keeps its session until the response is closed, then commits."""
    response = client.get("/stream/streamed/")
    assert checked_out() == 1  # still streaming: the session is open
    body = b"".join(response.streaming_content)  # type: ignore[attr-defined]
    assert body == b"streamed\n"
    response.close()
    assert checked_out() == 0
    assert titles() == ["streamed"]


def test_stream_abandoned_by_the_client_rolls_back(client: Client) -> None:
    """A client that goes away mid-stream: the session rolls back and the connection returns."""
    response = client.get("/stream/abandoned/")
    assert checked_out() == 1
    response.close()  # what the server does when the client disconnects
    assert checked_out() == 0
    assert titles() == []


@pytest.mark.postgresql
def test_documented_streaming_export_fetches_in_batches(client: Client) -> None:
    """docs/web.md's export reads its rows through a server-side cursor, a batch at a time, so
    memory stays flat however many rows there are (the earlier example loaded them all)."""
    from django.db import connection

    with session_scope() as session:
        session.execute(
            text("INSERT INTO testapp_note (title, body) VALUES (:title, '')"),
            [{"title": f"row-{n:04d}"} for n in range(1000)],
        )
    params = connection.settings_dict
    response = client.get("/export/")
    try:
        chunks = iter(response.streaming_content)  # type: ignore[attr-defined]
        assert next(chunks) == b"row-0000\n"
        with admin_connection() as admin:
            (query,) = admin.execute(
                "SELECT query FROM pg_stat_activity WHERE datname = %s AND application_name = %s",
                (params["NAME"], "mingus_sessions:main"),
            ).fetchone()
        # The rest of the rows are still on the server, behind a named cursor.
        assert query.startswith("FETCH FORWARD "), query
        assert b"".join(chunks).count(b"\n") == 999
    finally:
        response.close()
    assert checked_out() == 0


def test_concurrent_requests_get_their_own_sessions(settings: Any) -> None:
    """R13: 16 requests in threads on a pool of 4 each get a distinct session, all served."""
    config = copy.deepcopy(django_settings.MINGUS_SESSIONS)
    config["POOLS"]["main"].update(POOL_SIZE=4, MAX_OVERFLOW=0, POOL_TIMEOUT=10)
    settings.MINGUS_SESSIONS = config
    views.seen_sessions.clear()
    statuses: list[int] = []

    def call(marker: str) -> None:
        statuses.append(Client().get(f"/concurrent/{marker}/").status_code)

    threads = [threading.Thread(target=call, args=(f"r{i}",)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert statuses == [200] * 16
    assert len(views.seen_sessions) == 16
    assert checked_out() == 0
    assert get_engine().pool.size() == 4  # type: ignore[attr-defined]


# -- ASGI -------------------------------------------------------------------------------


def test_async_view_commits() -> None:
    """Under ASGI an async view's sync SQLAlchemy work (in a thread) commits on success."""

    async def scenario(async_client: AsyncClient) -> None:
        response = await async_client.get("/async/write/async-kept/")
        assert response.status_code == 200
        assert await _titles_async() == ["async-kept"]

    asyncio.run(scenario(AsyncClient()))


def test_async_view_current_session() -> None:
    """current_session() in sync code called from an async view is the request's session."""

    async def scenario(async_client: AsyncClient) -> None:
        assert (await async_client.get("/async/write-current/async-current/")).status_code == 200
        assert await _titles_async() == ["async-current"]

    asyncio.run(scenario(AsyncClient()))


def test_async_error_status_rolls_back() -> None:
    """Under ASGI a status of 400 or more rolls back."""

    async def scenario(async_client: AsyncClient) -> None:
        assert (await async_client.get("/async/write-fail/async-dropped/")).status_code == 422
        assert await _titles_async() == []

    asyncio.run(scenario(AsyncClient()))


def test_async_view_without_database(checkouts: list[int]) -> None:
    """Under ASGI a request that never uses the session checks out nothing."""

    async def scenario(async_client: AsyncClient) -> None:
        assert (await async_client.get("/async/no-database/")).status_code == 200
        assert checkouts == []

    asyncio.run(scenario(AsyncClient()))


def test_sync_view_under_asgi() -> None:
    """A sync view served by the ASGI handler commits through the async middleware path."""

    async def scenario(async_client: AsyncClient) -> None:
        assert (await async_client.get("/write/sync-under-asgi/")).status_code == 200
        assert await _titles_async() == ["sync-under-asgi"]

    asyncio.run(scenario(AsyncClient()))


def test_async_streaming_response() -> None:
    """An async streaming response commits once the stream is read and the response closed."""

    async def scenario(async_client: AsyncClient) -> None:
        response = await async_client.get("/async/stream/async-streamed/")
        chunks = [chunk async for chunk in response.streaming_content]  # type: ignore[attr-defined]
        assert b"".join(chunks) == b"async-streamed\n"
        await _close_async(response)
        assert await _titles_async() == ["async-streamed"]

    asyncio.run(scenario(AsyncClient()))


@pytest.mark.usefixtures("raising_hook")
@pytest.mark.parametrize("url", ["/async/write/async-hooked/", "/write/sync-hooked/"])
def test_async_commit_hook_that_raises(url: str, caplog: pytest.LogCaptureFixture) -> None:
    """Under ASGI a hook that raises: rolled back, connection returned, the hook's error logged."""

    async def scenario(async_client: AsyncClient) -> None:
        assert (await async_client.get(url)).status_code == 500
        assert await _titles_async() == []
        assert await sync_to_async(checked_out)() == 0

    with caplog.at_level(logging.ERROR, logger="django.request"):
        asyncio.run(scenario(AsyncClient(raise_request_exception=False)))
    assert logged(caplog) == [RuntimeError]


@pytest.mark.usefixtures("raising_hook")
def test_async_streaming_response_whose_commit_hook_raises() -> None:
    """Under ASGI a streaming response's hook that raises at close: the connection returns."""

    async def scenario(async_client: AsyncClient) -> None:
        response = await async_client.get("/async/stream/async-hooked-stream/")
        chunks: list[bytes] = []
        with pytest.raises(RuntimeError, match="the commit hook failed"):
            # The test client closes the response once the stream is read.
            async for chunk in response.streaming_content:  # type: ignore[attr-defined]
                chunks.append(chunk)
        assert b"".join(chunks) == b"async-hooked-stream\n"
        await sync_to_async(response.close)()  # a second close finishes nothing again
        assert await sync_to_async(checked_out)() == 0
        assert await _titles_async() == []

    asyncio.run(scenario(AsyncClient()))


async def _titles_async() -> list[str]:
    from asgiref.sync import sync_to_async

    return await sync_to_async(titles)()


async def _close_async(response: Any) -> None:
    from asgiref.sync import sync_to_async

    await sync_to_async(response.close)()
    assert await sync_to_async(checked_out)() == 0


# -- inside a test's joined session -------------------------------------------------------


@pytest.mark.django_db(databases=["default", "other"])
def test_request_inside_sa_session_is_a_savepoint(sa_session: Any, client: Client) -> None:
    """A request served while a scope of the pool is active is a savepoint on its session."""
    from tests.testapp.models import Note

    Note.objects.create(title="from-orm")
    assert client.get("/write/from-view/").status_code == 200
    assert client.get("/write/refused/400/").status_code == 400
    found = sa_session.execute(text("SELECT title FROM testapp_note ORDER BY title"))
    assert list(found.scalars()) == ["from-orm", "from-view"]


# -- request.db_session stands in for the session, lazily ---------------------------------------


def _lazy_proxy(request: HttpRequest) -> JsonResponse:
    """Ask about request.db_session without using it: nothing may open."""
    db = request.db_session  # type: ignore[attr-defined]
    return JsonResponse(
        {
            "is_session": isinstance(db, Session),
            "class": db.__class__.__name__,
            "repr": repr(db),
            "copied": copy.copy(db) is db and copy.deepcopy(db) is db,
        }
    )


def _current_only(request: HttpRequest) -> JsonResponse:
    """current_session() without a statement: the request's session, and still no connection."""
    session = current_session()
    db = request.db_session  # type: ignore[attr-defined]
    return JsonResponse(
        {
            "same": db == session and session == db and hash(db) == hash(session),
            "is_session": isinstance(db, Session),
            "in_repr": repr(session) in repr(db),
        }
    )


def _attribute_writes(request: HttpRequest) -> JsonResponse:
    """Setting and deleting attributes of request.db_session does it on the session."""
    db = request.db_session  # type: ignore[attr-defined]
    db.autoflush = False
    db.info["marker"] = "set"
    db.custom = "on the session"
    session = current_session()
    found = {"autoflush": session.autoflush, "info": session.info.get("marker")}
    found["custom"] = session.custom  # type: ignore[attr-defined]
    del db.custom
    found["deleted"] = not hasattr(session, "custom")
    return JsonResponse(found)


def _nested_scope(request: HttpRequest, title: str) -> JsonResponse:
    """session_scope() in a view is a SAVEPOINT on the request's session, committed with it."""
    with session_scope() as inner:
        inner.execute(
            text("INSERT INTO testapp_note (title, body) VALUES (:title, '')"), {"title": title}
        )
        same = request.db_session == inner and current_session() is inner  # type: ignore[attr-defined]
    with pytest.raises(ValueError), session_scope() as failing:
        failing.execute(
            text("INSERT INTO testapp_note (title, body) VALUES (:title, '')"),
            {"title": title + "-rolled-back"},
        )
        raise ValueError("only this savepoint rolls back")
    return JsonResponse({"same": same})


def _pool_of_the_request(request: HttpRequest) -> JsonResponse:
    return JsonResponse(
        {
            "pool": request.db_session.pool,  # type: ignore[attr-defined]
            "other_engine": current_session().get_bind() is get_engine("other"),
        }
    )


def _held_past_the_leak_threshold(request: HttpRequest) -> HttpResponse:
    request.db_session.execute(text("SELECT 1"))  # type: ignore[attr-defined]
    time.sleep(0.1)
    return HttpResponse("held")


urlpatterns = [
    path("held/", _held_past_the_leak_threshold),
    path("lazy-proxy/", _lazy_proxy),
    path("current-only/", _current_only),
    path("attribute-writes/", _attribute_writes),
    path("nested/<str:title>/", _nested_scope),
    path("pool/", _pool_of_the_request),
    path("no-database/", views.no_database),
]

here = pytest.mark.urls(__name__)


@here
def test_leak_report_of_a_request_points_at_the_view(
    client: Client, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A request holding its connection past LEAK_THRESHOLD: the report names the view's line."""
    config = copy.deepcopy(django_settings.MINGUS_SESSIONS)
    config["LEAK_THRESHOLD"] = 0.05
    settings.MINGUS_SESSIONS = config
    caplog.set_level(logging.WARNING, logger="mingus_sessions.leaks")
    assert client.get("/held/").status_code == 200
    found = [r.getMessage() for r in caplog.records if r.name == "mingus_sessions.leaks"]
    assert len(found) == 2, found
    line = inspect.getsourcelines(_held_past_the_leak_threshold)[1] + 1
    where = re.search(r'File "([^"]*)", line (\d+), in (\w+)', found[0])
    assert where is not None, found[0]
    assert where.group(1).endswith("test_middleware.py")
    assert (int(where.group(2)), where.group(3)) == (line, "_held_past_the_leak_threshold")
    assert "returned after" in found[1]


@here
def test_db_session_is_a_session_before_it_opens(client: Client, checkouts: list[int]) -> None:
    """isinstance(request.db_session, Session), repr and copies: no session is even created."""
    before = state.sessions.total_sessions
    found = client.get("/lazy-proxy/").json()
    assert found == {
        "is_session": True,
        "class": "Session",
        "repr": "<RequestSession of pool 'main', not opened yet>",
        "copied": True,
    }
    assert state.sessions.total_sessions == before
    assert checkouts == []


@here
def test_current_session_opens_no_connection_until_used(
    client: Client, checkouts: list[int]
) -> None:
    """current_session() in a view is request.db_session, and checks nothing out by itself."""
    before = state.sessions.total_sessions
    assert client.get("/current-only/").json() == {
        "same": True,
        "is_session": True,
        "in_repr": True,
    }
    assert state.sessions.total_sessions == before + 1
    assert checkouts == []
    assert state.sessions.active_sessions == 0  # finished: closed


@here
def test_attribute_writes_go_to_the_session(client: Client, checkouts: list[int]) -> None:
    """Setting or deleting an attribute of request.db_session sets or deletes it on the session."""
    assert client.get("/attribute-writes/").json() == {
        "autoflush": False,
        "info": "set",
        "custom": "on the session",
        "deleted": True,
    }
    assert checkouts == []


@here
def test_nested_scope_in_a_view_is_a_savepoint(client: Client, checkouts: list[int]) -> None:
    """A session_scope() in a view works on the request's session: one connection, one commit."""
    assert client.get("/nested/inner/").json() == {"same": True}
    assert len(checkouts) == 1
    assert checked_out() == 0
    assert titles() == ["inner"]


@here
def test_default_pool_follows_the_settings(settings: Any, client: Client) -> None:
    """The request's pool is DEFAULT_POOL of the settings in force at each request."""
    assert client.get("/pool/").json() == {"pool": "main", "other_engine": False}
    config = copy.deepcopy(django_settings.MINGUS_SESSIONS)
    config["DEFAULT_POOL"] = "other"
    settings.MINGUS_SESSIONS = config
    assert client.get("/pool/").json() == {"pool": "other", "other_engine": True}
    settings.MINGUS_SESSIONS = copy.deepcopy(config) | {"DEFAULT_POOL": "main"}
    assert client.get("/pool/").json() == {"pool": "main", "other_engine": False}


@here
def test_monitoring_starts_again_after_a_stop(client: Client) -> None:
    """The middleware's check is cheap but exact: a request after stop_monitoring() restarts it."""
    from mingus_sessions import monitor
    from mingus_sessions.metrics import stop_monitoring

    stop_monitoring()
    try:
        assert client.get("/no-database/").status_code == 200
        assert monitor.is_monitoring()
        stop_monitoring()
        assert client.get("/no-database/").status_code == 200  # the same handler
        assert monitor.is_monitoring()
    finally:
        stop_monitoring()


def test_request_session_used_directly() -> None:
    """A RequestSession outside a request: equal to and hashed as its session, closed by finish."""
    from mingus_sessions.middleware import RequestSession
    from mingus_sessions.request_session import new_request_session

    scope = new_request_session(None)
    assert isinstance(scope, RequestSession)
    assert isinstance(scope, Session)
    assert scope != object()
    assert not scope.has_work
    session = scope.session
    assert scope == session
    assert hash(scope) == hash(session)
    assert scope.has_work
    assert type(scope) is RequestSession  # no class swapping: has_work reads its fields
    assert scope.execute(text("SELECT 1")).scalar_one() == 1
    assert checked_out() == 1
    scope.finish(commit=True)
    scope.finish(commit=True)  # once only
    assert checked_out() == 0


# -- a view's connection failures count toward the pool's circuit breaker -------------------------


@pytest.fixture
def unreachable_pool(settings: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    """DEFAULT_POOL "dead": PostgreSQL at a closed port of 127.0.0.1; the breaker opens at 3."""
    pytest.importorskip("psycopg")
    add_unreachable_alias(monkeypatch, "dead", {"connect_timeout": 5})
    config = copy.deepcopy(django_settings.MINGUS_SESSIONS)
    config["POOLS"]["dead"] = {"DATABASE": "dead", "POOL_SIZE": 2, "MAX_OVERFLOW": 0}
    config["DEFAULT_POOL"] = "dead"
    config["CIRCUIT_BREAKER"] = {"ENABLED": True, "FAILURE_THRESHOLD": 3, "RECOVERY_TIMEOUT": 60}
    settings.MINGUS_SESSIONS = config
    return "dead"


def test_view_connection_failures_open_the_breaker(
    unreachable_pool: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Views failing to connect count as session_scope() failures do: the breaker opens at 3."""
    breaker = get_circuit_breaker(unreachable_pool)
    client = Client(raise_request_exception=False)
    with caplog.at_level(logging.ERROR, logger="django.request"):
        for count in (1, 2, 3):
            assert client.get(f"/write/refused-{count}/").status_code == 500
            assert breaker.failures == count
        assert breaker.state == "open"
        assert state.sessions.failed_sessions == 3
        # Open: the next request fails fast, before any session opens.
        assert client.get("/write/fails-fast/").status_code == 500
    assert breaker.failures == 3
    # Django logged each view's own exception, once: the middleware raised nothing more.
    assert logged(caplog) == [sa_exc.OperationalError] * 3 + [CircuitOpenError]
    assert get_engine(unreachable_pool).pool.checkedout() == 0  # type: ignore[attr-defined]


def test_async_view_connection_failures_open_the_breaker(unreachable_pool: str) -> None:
    """Under ASGI too, sync and async views' connection failures open the breaker."""
    breaker = get_circuit_breaker(unreachable_pool)

    async def scenario(async_client: AsyncClient) -> None:
        for url in ("/async/write/refused-1/", "/write/refused-2/", "/async/write/refused-3/"):
            assert (await async_client.get(url)).status_code == 500

    asyncio.run(scenario(AsyncClient(raise_request_exception=False)))
    assert (breaker.state, breaker.failures) == ("open", 3)
    assert state.sessions.failed_sessions == 3
    assert get_engine(unreachable_pool).pool.checkedout() == 0  # type: ignore[attr-defined]


class ErrorPageMiddleware:
    """Answers a view's exception with a page of its own, as a project's handler may."""

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> Any:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse:
        return HttpResponse("down for maintenance", status=503)


def test_counted_view_failure_keeps_the_error_page(unreachable_pool: str, settings: Any) -> None:
    """The failure is counted, and the page another middleware made for it is what is sent."""
    settings.MIDDLEWARE = [
        *django_settings.MIDDLEWARE[:-1],
        f"{__name__}.ErrorPageMiddleware",
        "mingus_sessions.middleware.SessionMiddleware",
    ]
    response = Client().get("/write/refused/")  # would raise what the middleware raised
    assert (response.status_code, response.content) == (503, b"down for maintenance")
    assert get_circuit_breaker(unreachable_pool).failures == 1
    assert state.sessions.failed_sessions == 1


def test_other_error_finishing_a_failed_request_is_raised(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Only the scope's translation of the view's exception is dropped: another error is not."""
    from mingus_sessions.middleware import RequestSession

    finish = RequestSession.finish

    def finish_then_fail(self: RequestSession, *, commit: bool, exc: Any = None) -> None:
        finish(self, commit=commit, exc=exc)
        raise TransactionError("the scope failed otherwise", pool=self.pool)

    monkeypatch.setattr(RequestSession, "finish", finish_then_fail)
    client = Client(raise_request_exception=False)
    with caplog.at_level(logging.ERROR, logger="django.request"):
        assert client.get("/write-raise/dropped/").status_code == 500
    assert logged(caplog) == [ValueError, TransactionError]
    assert checked_out() == 0
    assert titles() == []
