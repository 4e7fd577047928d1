"""The Django ORM side of the seeds' domain.

SQLAlchemy Core reads and writes the same tables through :mod:`.tables`, which
builds them from these models with ``table_for``: a change here needs no change
there.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class Channel(models.TextChoices):
    SMS = "sms", "SMS"
    EMAIL = "email", "Email"
    PUSH = "push", "Push"


class Status(models.TextChoices):
    QUEUED = "queued", "Queued"
    SENT = "sent", "Sent"
    DELIVERED = "delivered", "Delivered"
    FAILED = "failed", "Failed"


class CommunicationPreferences(models.Model):
    """How and when one user may be contacted."""

    # A unique foreign key; OneToOneField is how Django spells it (a ForeignKey
    # with unique=True draws the fields.W342 warning).
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="communication_preferences"
    )
    sms_enabled = models.BooleanField(default=True)
    email_enabled = models.BooleanField(default=True)
    quiet_hours_start = models.TimeField(null=True, blank=True)
    quiet_hours_end = models.TimeField(null=True, blank=True)
    last_sms_sent = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "communication preferences"
        verbose_name_plural = "communication preferences"

    def __str__(self) -> str:
        return f"Preferences of user {self.user_id}"


class CommunicationMetrics(models.Model):
    """One communication sent (or attempted) to a user."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="communications"
    )
    message_type = models.CharField(max_length=50)
    channel = models.CharField(max_length=10, choices=Channel.choices)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.SENT)
    sent_at = models.DateTimeField(default=timezone.now, db_index=True)
    # NULL, not "", for "no key": a unique column may hold many NULLs but only
    # one empty string.
    idempotency_key = models.CharField(max_length=100, unique=True, null=True, blank=True)

    class Meta:
        verbose_name = "communication"
        verbose_name_plural = "communications"
        ordering = ["-sent_at", "-id"]

    def __str__(self) -> str:
        return f"{self.channel} {self.message_type} to user {self.user_id}: {self.status}"


class UserEngagementMetrics(models.Model):
    """Running engagement counters of one user."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="engagement"
    )
    total_communications = models.IntegerField(default=0)
    last_activity = models.DateTimeField(null=True, blank=True)
    engagement_score = models.FloatField(default=0.0)

    class Meta:
        verbose_name = "user engagement"
        verbose_name_plural = "user engagement"

    def __str__(self) -> str:
        return f"Engagement of user {self.user_id}"
