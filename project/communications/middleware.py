"""The demo's answer to a database outage: a 503 page, not a server error.

The views already answer 503 when a read or write on a SQLAlchemy session
fails (``SessionError``). Whatever else needs the database on the way, the ORM
in a form's choices, ``get_object_or_404``, the admin, raises Django's
``OperationalError`` or ``InterfaceError``, or the library's
``DatabaseConnectionError`` (refused, timed out, breaker open): this middleware
turns those into the same 503 page, with ``Retry-After``, instead of a 500
(Django's debug page with ``DEBUG`` on). Listed after ``SessionMiddleware``, so
that middleware sees the 503 and rolls the request's session back.

Data errors (an ``IntegrityError``, a ``ProgrammingError``) are bugs, not
outages: they stay 500s.

It is sync and async capable (``MiddlewareMixin``): a sync-only middleware would
make Django run every middleware above it in sync mode under ASGI, and
``SessionMiddleware`` would then give async views no ``request.adb_session``.
"""

from __future__ import annotations

import logging

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string
from django.utils.deprecation import MiddlewareMixin

from mingus_sessions.errors import DatabaseConnectionError

logger = logging.getLogger(__name__)

#: Seconds a client is told to wait before trying again.
RETRY_AFTER = 10

OUTAGES = (OperationalError, InterfaceError, DatabaseConnectionError)


class DatabaseOutageMiddleware(MiddlewareMixin):
    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, OUTAGES):
            return None
        # One line: the cause's first line (a driver's message may go on with hints).
        cause = str(exception).strip().splitlines()[:1] or [type(exception).__name__]
        logger.warning(
            "%s %s: the database is unavailable: %s", request.method, request.path, cause[0]
        )
        # A template of its own, reading nothing that needs the database (no user,
        # no session-stored messages).
        page = render_to_string(
            "communications/outage.html", {"error": type(exception).__name__}, request=None
        )
        response = HttpResponse(page, status=503)
        response["Retry-After"] = str(RETRY_AFTER)
        return response
