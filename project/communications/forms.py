"""The demo's forms: record a communication, send an SMS in the background, edit preferences."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.auth import get_user_model
from django.db.models import QuerySet

from .demo import DEMO_MESSAGE_TYPES, DEMO_USERS
from .models import Channel, CommunicationPreferences, Status


def _demo_users() -> QuerySet[Any]:
    """The demo users, by name; evaluated per form, not at import (they may come later)."""
    return (
        get_user_model()
        .objects.filter(username__in=[u.username for u in DEMO_USERS])
        .order_by("username")
    )


class RecordCommunicationForm(forms.Form):
    """Pick a demo user, a channel, a message type and a status."""

    user = forms.ModelChoiceField(queryset=get_user_model().objects.none(), empty_label=None)
    channel = forms.ChoiceField(choices=Channel.choices)
    message_type = forms.ChoiceField(choices=[(t, t) for t in DEMO_MESSAGE_TYPES])
    status = forms.ChoiceField(choices=Status.choices, initial=Status.SENT)

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        user_field = self.fields["user"]
        assert isinstance(user_field, forms.ModelChoiceField)
        user_field.queryset = _demo_users()

    def clean(self) -> dict[str, object]:
        """Refuse a channel the user turned off in their communication preferences."""
        cleaned = super().clean() or {}
        user, channel = cleaned.get("user"), cleaned.get("channel")
        if user is None or channel not in (Channel.SMS, Channel.EMAIL):
            return cleaned
        prefs = CommunicationPreferences.objects.filter(user=user).first()
        enabled = prefs is None or (
            prefs.sms_enabled if channel == Channel.SMS else prefs.email_enabled
        )
        if not enabled:
            self.add_error("channel", f"{user.username} has turned {channel} off.")
        return cleaned


class SendSMSForm(forms.Form):
    """Pick a demo user who accepts SMS and a message type; a Celery task sends it."""

    # Prefixed: the index page shows this form next to RecordCommunicationForm.
    prefix = "sms"

    user = forms.ModelChoiceField(queryset=get_user_model().objects.none(), empty_label=None)
    message_type = forms.ChoiceField(choices=[(t, t) for t in DEMO_MESSAGE_TYPES])

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        user_field = self.fields["user"]
        assert isinstance(user_field, forms.ModelChoiceField)
        user_field.queryset = _demo_users()

    def clean_user(self) -> object:
        """Refuse a user who turned SMS off (the task checks again when it runs)."""
        user = self.cleaned_data["user"]
        prefs = CommunicationPreferences.objects.filter(user=user).first()
        if prefs is not None and not prefs.sms_enabled:
            raise forms.ValidationError(f"{user.username} has turned sms off.")
        return user


class PreferencesForm(forms.ModelForm):  # type: ignore[type-arg]
    """Edit one user's communication preferences; optionally make the save fail on purpose."""

    simulate_failure = forms.BooleanField(
        required=False,
        label="Simulate a failure after both writes",
        help_text="Raises inside the transaction after the ORM and SQLAlchemy writes: "
        "neither is committed.",
    )

    class Meta:
        model = CommunicationPreferences
        fields = ["sms_enabled", "email_enabled", "quiet_hours_start", "quiet_hours_end"]
        widgets = {
            "quiet_hours_start": forms.TimeInput(attrs={"type": "time"}, format="%H:%M"),
            "quiet_hours_end": forms.TimeInput(attrs={"type": "time"}, format="%H:%M"),
        }

    def clean(self) -> dict[str, object]:
        """Quiet hours need both ends, or neither."""
        cleaned = super().clean() or {}
        start, end = cleaned.get("quiet_hours_start"), cleaned.get("quiet_hours_end")
        # A field that failed its own validation is missing here too: no second error.
        invalid = self.has_error("quiet_hours_start") or self.has_error("quiet_hours_end")
        if (start is None) != (end is None) and not invalid:
            self.add_error(None, "Give both ends of the quiet hours, or neither.")
        return cleaned
