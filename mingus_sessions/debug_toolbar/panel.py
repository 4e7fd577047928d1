"""The debug-toolbar panel: a request's SQLAlchemy work, as Django's SQL panel shows the ORM's."""

from __future__ import annotations

from contextvars import Token
from typing import Any

from debug_toolbar import settings as toolbar_settings
from debug_toolbar.panels import Panel
from debug_toolbar.utils import render_stacktrace
from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from .. import conf
from .listeners import Listeners, start_listening
from .recording import Recording, current, empty_stats

__all__ = ["SQLAlchemyPanel"]

# Frames of these are never "where" a statement ran: the code that asked for it
# is further out (the toolbar's own HIDE_IN_STACKTRACES is added to them).
_NEVER_WHERE = ("sqlalchemy", "mingus_sessions")


class SQLAlchemyPanel(Panel):
    """The request's SQLAlchemy statements per pool, the acquire waits and the transactions.

    Add ``"mingus_sessions.debug_toolbar.SQLAlchemyPanel"`` to
    ``DEBUG_TOOLBAR_PANELS``. While the toolbar instruments a request, the
    panel listens on the pools' engines (and the joined engines on Django's
    connections) and records, for that request only: each statement with its
    duration (its bound parameters only when ``LOG_QUERY_PARAMETERS`` is on),
    each checkout with the time it waited for a connection, and each
    transaction with its savepoints and how it ended.
    """

    # Sync views under ASGI run in a thread that copies the request's context,
    # where the recording lives; the listeners go on without any await.
    is_async = True
    template = "mingus_sessions/debug_toolbar/sqlalchemy.html"
    nav_title = _("SQLAlchemy")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._recording: Recording | None = None
        self._token: Token[Recording | None] | None = None
        self._listeners: Listeners | None = None

    # -- what the toolbar shows --------------------------------------------------------------

    @property
    def nav_subtitle(self) -> str:
        stats = self.get_stats()
        count = stats.get("count", 0)
        return ngettext(
            "%(count)d statement in %(time).2fms",
            "%(count)d statements in %(time).2fms",
            count,
        ) % {"count": count, "time": stats.get("time_ms", 0.0)}

    @property
    def title(self) -> str:
        count = len({summary["pool"] for summary in self.get_stats().get("pools", [])})
        return ngettext(
            "SQLAlchemy statements on %(count)d pool",
            "SQLAlchemy statements on %(count)d pools",
            count,
        ) % {"count": count}

    @property
    def content(self) -> str:
        stats = self.get_stats()
        context = {
            **stats,
            "statements": [
                {**record, "stacktrace": render_stacktrace(record.get("stacktrace") or [])}
                for record in stats.get("statements", [])
            ],
            "transactions": [
                {**record, "stacktrace": render_stacktrace(record.get("stacktrace") or [])}
                for record in stats.get("transactions", [])
            ],
        }
        return render_to_string(self.template, context)

    # -- the toolbar's lifecycle -------------------------------------------------------------

    def enable_instrumentation(self) -> None:
        """Start recording this request's SQLAlchemy work (the toolbar calls it first)."""
        if self._recording is not None:
            return
        hidden = (*_NEVER_WHERE, *toolbar_settings.get_config()["HIDE_IN_STACKTRACES"])
        self._recording = Recording(
            log_parameters=conf.get_config().log_query_parameters, hidden=hidden
        )
        self._token = current.set(self._recording)
        self._listeners = start_listening()

    def disable_instrumentation(self) -> None:
        """Stop recording (the toolbar calls it once the response is made, whatever happened)."""
        token, self._token = self._token, None
        if token is not None:
            current.reset(token)
        listeners, self._listeners = self._listeners, None
        if listeners is not None:
            listeners.release()

    def generate_stats(self, request: HttpRequest, response: HttpResponse) -> None:
        recording = self._recording
        if recording is None:
            self.record_stats(empty_stats())
            return
        slow_ms = toolbar_settings.get_config()["SQL_WARNING_THRESHOLD"]
        self.record_stats(recording.stats(slow_ms))

    def generate_server_timing(self, request: HttpRequest, response: HttpResponse) -> None:
        stats = self.get_stats()
        self.record_server_timing(
            "sqlalchemy_time",
            f"SQLAlchemy {stats.get('count', 0)} statements",
            round(stats.get("time_ms", 0.0), 3),
        )
