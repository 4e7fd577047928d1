"""Admin pages for the demo's three models."""

from __future__ import annotations

from django.contrib import admin

from .models import CommunicationMetrics, CommunicationPreferences, UserEngagementMetrics


@admin.register(CommunicationPreferences)
class CommunicationPreferencesAdmin(admin.ModelAdmin):
    list_display = (
        "user",
        "sms_enabled",
        "email_enabled",
        "quiet_hours_start",
        "quiet_hours_end",
        "last_sms_sent",
        "updated_at",
    )
    list_filter = ("sms_enabled", "email_enabled")
    search_fields = ("user__username",)
    list_select_related = ("user",)


@admin.register(CommunicationMetrics)
class CommunicationMetricsAdmin(admin.ModelAdmin):
    list_display = ("id", "user", "channel", "message_type", "status", "sent_at")
    list_filter = ("channel", "status", "message_type")
    search_fields = ("user__username", "message_type", "idempotency_key")
    date_hierarchy = "sent_at"
    list_select_related = ("user",)


@admin.register(UserEngagementMetrics)
class UserEngagementMetricsAdmin(admin.ModelAdmin):
    list_display = ("user", "total_communications", "last_activity", "engagement_score")
    search_fields = ("user__username",)
    list_select_related = ("user",)
