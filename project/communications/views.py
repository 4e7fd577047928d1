"""The demo's one page: recent communications, the summary, and a form to record one."""

from __future__ import annotations

import logging
import uuid

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from mingus_sessions import SessionError

from . import services
from .forms import RecordCommunicationForm

logger = logging.getLogger(__name__)


@require_http_methods(["GET", "HEAD", "POST"])
def index(request: HttpRequest) -> HttpResponse:
    """GET shows the page; POST records a communication and redirects back (PRG)."""
    if request.method == "POST":
        form = RecordCommunicationForm(request.POST)
        if form.is_valid():
            data = form.cleaned_data
            try:
                recorded = services.record_communication(
                    user_id=data["user"].pk,
                    channel=data["channel"],
                    message_type=data["message_type"],
                    status=data["status"],
                    # One key per submitted form would need a hidden field; a
                    # fresh key per POST still shows the column in use.
                    idempotency_key=f"web-{uuid.uuid4()}",
                )
            except SessionError as exc:
                # The library already logged the cause; the user gets a short note.
                logger.warning("Recording a communication failed: %s", exc)
                messages.error(request, "The database is unavailable; nothing was recorded.")
            else:
                messages.success(
                    request,
                    f"Recorded communication #{recorded.id}: {data['channel']} "
                    f"{data['message_type']} to {data['user'].username}.",
                )
            return redirect("communications:index")
    else:
        form = RecordCommunicationForm()

    status = 200 if request.method != "POST" else 400  # a POST here had an invalid form
    try:
        context = {
            "form": form,
            "recent": services.recent_communications(limit=20),
            "summary": services.engagement_summary(),
            "db_error": None,
        }
    except SessionError as exc:
        logger.warning("The index page could not read the database: %s", exc)
        # The error's class only: its text is for the logs, not for visitors.
        context = {"form": form, "recent": [], "summary": None, "db_error": type(exc).__name__}
        status = 503
    return render(request, "communications/index.html", context, status=status)
