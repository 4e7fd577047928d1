"""The demo's forms: record a communication, edit a user's communication preferences."""

from __future__ import annotations

from django import forms
from django.contrib.auth import get_user_model

from .demo import DEMO_MESSAGE_TYPES, DEMO_USERS
from .models import Channel, CommunicationPreferences, Status


class RecordCommunicationForm(forms.Form):
    """Pick a demo user, a channel, a message type and a status."""

    user = forms.ModelChoiceField(queryset=get_user_model().objects.none(), empty_label=None)
    channel = forms.ChoiceField(choices=Channel.choices)
    message_type = forms.ChoiceField(choices=[(t, t) for t in DEMO_MESSAGE_TYPES])
    status = forms.ChoiceField(choices=Status.choices, initial=Status.SENT)

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        # Evaluated per form, not at import: the demo users may be loaded later.
        user_field = self.fields["user"]
        assert isinstance(user_field, forms.ModelChoiceField)
        user_field.queryset = (
            get_user_model()
            .objects.filter(username__in=[u.username for u in DEMO_USERS])
            .order_by("username")
        )

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
