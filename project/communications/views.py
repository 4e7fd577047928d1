"""The demo's pages: communications, a user's preferences, analytics.

Every request has a session of the default pool from ``SessionMiddleware``
(``request.db_session``), opened only if the view uses it. The services'
``session_scope()`` calls run inside it as SAVEPOINTs, so the middleware
decides the transaction by the response: below 400 it commits, from 400 on (or
when the view raised) it rolls back. That is why these views answer an
invalid form with 400 and a database failure with 503 instead of a redirect.

"Send SMS in the background" queues a Celery task (:mod:`.tasks`) with
``apply_async_on_commit``: the message is published once the request's
transaction has committed, never if it rolls back.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, time
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods

from mingus_sessions import SessionError

from . import services, tasks
from .demo import DEMO_USERS
from .forms import PreferencesForm, RecordCommunicationForm, SendSMSForm
from .models import CommunicationPreferences

logger = logging.getLogger(__name__)

_DEMO_USERNAMES = [demo.username for demo in DEMO_USERS]

#: The rows of the preferences comparison table: label, attribute.
_STATE_ROWS = (
    ("SMS enabled", "sms_enabled"),
    ("Email enabled", "email_enabled"),
    ("Quiet hours start", "quiet_hours_start"),
    ("Quiet hours end", "quiet_hours_end"),
    ("Updated at (ORM, auto_now)", "updated_at"),
    ("Last activity (SQLAlchemy)", "last_activity"),
)


def _shown(state: services.PreferencesState | None, name: str) -> str:
    """One value of ``state`` as the comparison table shows it ("—" for none)."""
    value = getattr(state, name, None)
    if value is None:
        return "—"
    if isinstance(value, datetime):
        return f"{value:%Y-%m-%d %H:%M:%S.%f} UTC"
    if isinstance(value, time):
        return f"{value:%H:%M}"
    return "yes" if value is True else "no" if value is False else str(value)


def _comparison(
    *states: services.PreferencesState | None,
) -> list[tuple[str, list[str]]]:
    """``(label, [value in each state])`` for every row of the comparison table."""
    return [(label, [_shown(state, name) for state in states]) for label, name in _STATE_ROWS]


@require_http_methods(["GET", "HEAD", "POST"])
def index(request: HttpRequest) -> HttpResponse:
    """GET shows the page; POST records a communication and redirects back (PRG).

    The recent list and the recorded communication use the request's session
    (``record_communication``'s scopes are SAVEPOINTs on it): the redirect's
    302 commits the new row; a 400 (invalid form), a 503 or an exception
    rolls back whatever the request wrote.
    """
    status = 200
    db_error: str | None = None
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
                # The error's class only: its text is for the logs, not for visitors.
                db_error, status = type(exc).__name__, 503
            else:
                messages.success(
                    request,
                    f"Recorded communication #{recorded.id}: {data['channel']} "
                    f"{data['message_type']} to {data['user'].username}.",
                )
                return redirect("communications:index")
        else:
            status = 400
    else:
        form = RecordCommunicationForm()
    return _index_page(request, form, SendSMSForm(), status=status, db_error=db_error)


def _broker() -> str:
    """The Celery broker's kind for the page ("redis", "sqla+sqlite"): never its URL."""
    return urlsplit(str(getattr(settings, "CELERY_BROKER_URL", ""))).scheme or "none"


def _index_page(
    request: HttpRequest,
    form: RecordCommunicationForm,
    sms_form: SendSMSForm,
    *,
    status: int = 200,
    db_error: str | None = None,
) -> HttpResponse:
    """The index page with these forms, the summary and the recent communications."""
    context = {
        "form": form,
        "sms_form": sms_form,
        "broker": _broker(),
        "recent": [],
        "summary": None,
        "db_error": db_error,
    }
    if db_error is None:
        # Not after a failed write: the request's session may be unusable.
        try:
            context["recent"] = services.recent_communications(limit=20)
            context["summary"] = services.engagement_summary()
        except SessionError as exc:
            logger.warning("The index page could not read the database: %s", exc)
            context["db_error"], status = type(exc).__name__, 503
    return render(request, "communications/index.html", context, status=status)


@require_http_methods(["POST"])
def send_sms(request: HttpRequest) -> HttpResponse:
    """Queue ``send_sms`` for after the request commits, and redirect to the index (PRG).

    ``apply_async_on_commit`` registers the publish on the request's session
    (``SessionMiddleware``): the middleware commits it with the redirect and
    then publishes. Had the request failed (a 4xx/5xx response or an
    exception), the message would never have been sent. The task id is chosen
    here so the page can name it; the task derives its idempotency key from it.
    """
    sms_form = SendSMSForm(request.POST)
    if not sms_form.is_valid():
        return _index_page(request, RecordCommunicationForm(), sms_form, status=400)
    user, message_type = sms_form.cleaned_data["user"], sms_form.cleaned_data["message_type"]
    task_id = str(uuid.uuid4())
    tasks.send_sms.apply_async_on_commit((user.pk, message_type), task_id=task_id)
    messages.success(
        request,
        f"Queued an SMS ({message_type}) to {user.username} as task {task_id}, published "
        "when this request committed. A Celery worker sends and records it: reload the "
        "page to see it in the list.",
    )
    return redirect("communications:index")


def _preferences_of(user_id: int) -> CommunicationPreferences:
    """The user's saved preferences, or a new unsaved row with the model's defaults."""
    found = CommunicationPreferences.objects.filter(user_id=user_id).first()
    return found if found is not None else CommunicationPreferences(user_id=user_id)


@require_http_methods(["GET", "HEAD"])
def preferences_index(request: HttpRequest) -> HttpResponse:
    """Redirect to the first demo user's preferences, or say how to load the demo users."""
    usernames = set(
        get_user_model()
        .objects.filter(username__in=_DEMO_USERNAMES)
        .values_list("username", flat=True)
    )
    first = next((name for name in _DEMO_USERNAMES if name in usernames), None)
    if first is None:
        return render(request, "communications/no_demo_users.html", status=404)
    return redirect("communications:preferences", username=first)


@require_http_methods(["GET", "HEAD", "POST"])
def preferences(request: HttpRequest, username: str) -> HttpResponse:
    """GET shows a demo user's preferences; POST saves them (PRG) or shows the rollback.

    The save writes with the ORM (``prefs.save()``) and with SQLAlchemy (the
    user's ``last_activity``) in one ``transaction.atomic()`` block, the
    SQLAlchemy session joined to it: both commit, or, with "simulate a
    failure", neither does, and the page shows the state before, inside the
    transaction and after. This view leaves ``request.db_session`` alone: on
    SQLite its connection would hold the write lock the atomic block needs.
    """
    demo_user = get_object_or_404(get_user_model(), username=username, username__in=_DEMO_USERNAMES)
    # A user without a row gets an unsaved one: save() then INSERTs it.
    prefs = _preferences_of(demo_user.pk)
    status = 200
    outcome: dict[str, object] | None = None
    if request.method == "POST":
        form = PreferencesForm(request.POST, instance=prefs)
        if form.is_valid():
            before = services.preferences_state(demo_user.pk)
            try:
                inside = services.save_preferences(
                    form.save(commit=False),
                    simulate_failure=form.cleaned_data["simulate_failure"],
                )
            except services.SimulatedFailure as failure:
                after = services.preferences_state(demo_user.pk)
                outcome = {
                    "rows": _comparison(before, failure.inside, after),
                    "unchanged": after == before,
                }
                messages.error(
                    request,
                    "Simulated failure after both writes: the transaction rolled back. "
                    + (
                        "Neither the ORM save() nor the SQLAlchemy UPDATE landed."
                        if after == before
                        else "Something was committed anyway: see the table."
                    ),
                )
                # A server error, as a real one would be (the middleware rolls back
                # the request's session too). The form shows the database again:
                # the instance saved in the rolled-back transaction is stale.
                status = 500
                form = PreferencesForm(instance=_preferences_of(demo_user.pk))
            except (SessionError, DatabaseError) as exc:
                logger.warning("Saving the preferences of %s failed: %s", username, exc)
                messages.error(request, "The database is unavailable; nothing was saved.")
                status = 503
            else:
                assert inside.last_activity is not None  # save_preferences just set it
                messages.success(
                    request,
                    f"Saved the preferences of {username} with the ORM and set last_activity "
                    f"to {inside.last_activity:%Y-%m-%d %H:%M:%S} UTC with SQLAlchemy: "
                    "both committed in one transaction.",
                )
                return redirect("communications:preferences", username=username)
        else:
            status = 400
    else:
        form = PreferencesForm(instance=prefs)

    context = {
        "demo_user": demo_user,
        "demo_usernames": _DEMO_USERNAMES,
        "form": form,
        "state": services.preferences_state(demo_user.pk),
        "outcome": outcome,
    }
    return render(request, "communications/preferences.html", context, status=status)


@require_http_methods(["GET", "HEAD"])
def analytics(request: HttpRequest) -> HttpResponse:
    """Counts per channel and status, top users, the last 7 days: Core on ``analytics``."""
    try:
        report = services.analytics_report(days=7, top=5)
    except SessionError as exc:
        logger.warning("The analytics page could not read the database: %s", exc)
        context = {"report": None, "db_error": type(exc).__name__}
        return render(request, "communications/analytics.html", context, status=503)
    return render(request, "communications/analytics.html", {"report": report, "db_error": None})
