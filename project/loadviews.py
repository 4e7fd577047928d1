"""Small JSON endpoints for the load test (``scripts/load_test.sh``), mounted at ``/load/``.

One read and one write through SQLAlchemy (the request's session from
``SessionMiddleware``, via the demo's services), and one of each through the
Django ORM. Every write carries a client-chosen unique key, stored as the
communication's idempotency key (``sa-<key>`` or ``orm-<key>``), so the load
test can check afterwards that each acknowledged write is in the database
exactly once.

A write answers 201 only once it is committed: the ORM runs in autocommit, and
the SQLAlchemy write commits in the middleware after the view returns, which
turns a failed commit into a 500. A database failure is a 503 (the middleware
then rolls back). Every response names the endpoint in ``X-Load-Kind`` and a
write echoes its key in ``X-Load-Key``, so the load generator can tell which
request a response answers. The writes are CSRF-exempt: they are an API for a
load generator, not a form.
"""

from __future__ import annotations

import logging
import zlib

from django.contrib.auth import get_user_model
from django.db import DatabaseError, IntegrityError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from mingus_sessions import SessionError

from .communications import services
from .communications.demo import DEMO_USERS
from .communications.models import Channel, CommunicationMetrics

logger = logging.getLogger(__name__)

#: The message type of every communication the load test writes.
MESSAGE_TYPE = "load_test"
_MAX_KEY = 80
_user_ids: list[int] = []


def _reply(kind: str, body: dict[str, object], status: int, key: str = "") -> HttpResponse:
    response = JsonResponse(body, status=status)
    response["X-Load-Kind"] = kind
    if key:
        response["X-Load-Key"] = key
    return response


def _demo_user_id(key: str) -> int | None:
    """A demo user chosen by the key, so writes spread over the users' rows."""
    if not _user_ids:
        # Read once per process: the demo users never change during a run.
        names = [demo.username for demo in DEMO_USERS]
        found = get_user_model().objects.filter(username__in=names).order_by("pk")
        _user_ids.extend(found.values_list("pk", flat=True))
    if not _user_ids:
        return None
    return _user_ids[zlib.crc32(key.encode()) % len(_user_ids)]


def _key_of(request: HttpRequest) -> str | None:
    key = request.POST.get("key", "")
    return key if 0 < len(key) <= _MAX_KEY else None


@require_GET
def sa_read(request: HttpRequest) -> HttpResponse:
    """The 20 most recent communications, read on the request's session."""
    try:
        rows = services.recent_communications(limit=20)
    except SessionError as exc:
        return _reply("sa-read", {"error": type(exc).__name__}, 503)
    return _reply("sa-read", {"count": len(rows)}, 200)


@csrf_exempt
@require_POST
def sa_write(request: HttpRequest) -> HttpResponse:
    """Record a communication with SQLAlchemy; 201 once the middleware committed it."""
    key = _key_of(request)
    if key is None:
        return _reply("sa-write", {"error": f"key: 1 to {_MAX_KEY} characters"}, 400)
    try:
        user_id = _demo_user_id(key)
        if user_id is None:
            return _reply("sa-write", {"error": "no demo users: run load_demo_data"}, 503)
        recorded = services.record_communication(
            user_id=user_id,
            channel=Channel.EMAIL,
            message_type=MESSAGE_TYPE,
            idempotency_key=f"sa-{key}",
        )
    except (SessionError, DatabaseError) as exc:
        return _reply("sa-write", {"error": type(exc).__name__}, 503, key)
    body = {"id": recorded.id, "created": recorded.created}
    return _reply("sa-write", body, 201 if recorded.created else 200, key)


@require_GET
def orm_read(request: HttpRequest) -> HttpResponse:
    """The 20 most recent communications, read with the ORM."""
    try:
        rows = list(CommunicationMetrics.objects.select_related("user")[:20])
    except DatabaseError as exc:
        return _reply("orm-read", {"error": type(exc).__name__}, 503)
    return _reply("orm-read", {"count": len(rows)}, 200)


@csrf_exempt
@require_POST
def orm_write(request: HttpRequest) -> HttpResponse:
    """Record a communication with the ORM (autocommit): 201 once it is committed."""
    key = _key_of(request)
    if key is None:
        return _reply("orm-write", {"error": f"key: 1 to {_MAX_KEY} characters"}, 400)
    idempotency_key = f"orm-{key}"
    try:
        user_id = _demo_user_id(key)
        if user_id is None:
            return _reply("orm-write", {"error": "no demo users: run load_demo_data"}, 503)
        row = CommunicationMetrics.objects.create(
            user_id=user_id,
            message_type=MESSAGE_TYPE,
            channel=Channel.EMAIL,
            idempotency_key=idempotency_key,
        )
    except IntegrityError:
        # The same key again: already recorded, nothing written.
        existing = CommunicationMetrics.objects.get(idempotency_key=idempotency_key)
        return _reply("orm-write", {"id": existing.pk, "created": False}, 200, key)
    except DatabaseError as exc:
        return _reply("orm-write", {"error": type(exc).__name__}, 503, key)
    return _reply("orm-write", {"id": row.pk, "created": True}, 201, key)
