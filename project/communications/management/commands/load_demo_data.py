"""``manage.py load_demo_data``: demo users, their preferences and ~50 communications.

Idempotent: users are matched by username and communications by idempotency
key (``demo-000``, ``demo-001``, ...), so running it again adds nothing. The
communications are spread over the last days (one every 4 hours, the last one
now), so that the analytics page's "last 7 days" has something to show.
"""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser
from django.utils import timezone

from project.communications import services
from project.communications.demo import DEMO_MESSAGE_TYPES, DEMO_USERS
from project.communications.models import Channel, CommunicationPreferences, Status

#: The time between two demo communications.
_SPACING = timedelta(hours=4)

#: Mostly successes, as in real traffic.
_STATUS_WEIGHTS = {Status.DELIVERED: 5, Status.SENT: 3, Status.QUEUED: 1, Status.FAILED: 1}


class Command(BaseCommand):
    help = "Create the demo users, their preferences and demo communications (idempotent)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--count",
            type=int,
            default=50,
            help="How many demo communications should exist (default: 50).",
        )

    def handle(self, *args: Any, count: int, **options: Any) -> None:
        user_model = get_user_model()
        users = []
        new_users = 0
        # No transaction.atomic() around this: record_communication writes on
        # its own pool connection, which on SQLite would wait for the lock an
        # open ORM transaction holds.
        for demo in DEMO_USERS:
            user, created = user_model.objects.get_or_create(
                username=demo.username,
                defaults={"first_name": demo.first_name, "email": f"{demo.username}@example.com"},
            )
            if created:
                user.set_unusable_password()
                user.save(update_fields=["password"])
                new_users += 1
            start, end = demo.quiet_hours or (None, None)
            CommunicationPreferences.objects.update_or_create(
                user=user,
                defaults={
                    "sms_enabled": demo.sms_enabled,
                    "email_enabled": demo.email_enabled,
                    "quiet_hours_start": start,
                    "quiet_hours_end": end,
                },
            )
            users.append((user, demo))

        # A fixed seed: the same keys always get the same rows.
        rng = random.Random(2024)
        statuses = list(_STATUS_WEIGHTS)
        weights = list(_STATUS_WEIGHTS.values())
        created_count = 0
        # Oldest first: each user's last_activity (the sent_at of their latest
        # communication) then only moves forward.
        newest = timezone.now()
        for i in range(max(count, 0)):
            user, demo = users[i % len(users)]
            channels = [Channel.PUSH]
            if demo.sms_enabled:
                channels.append(Channel.SMS)
            if demo.email_enabled:
                channels.append(Channel.EMAIL)
            recorded = services.record_communication(
                user_id=user.pk,
                channel=rng.choice(channels),
                message_type=rng.choice(DEMO_MESSAGE_TYPES),
                status=rng.choices(statuses, weights)[0],
                idempotency_key=f"demo-{i:03d}",
                sent_at=newest - (max(count, 0) - 1 - i) * _SPACING,
            )
            created_count += recorded.created

        summary = services.engagement_summary()
        self.stdout.write(
            f"Demo users: {len(users)} ({new_users} new). "
            f"Communications: {created_count} created, {max(count, 0) - created_count} "
            "already present."
        )
        per_channel = ", ".join(f"{name} {n}" for name, n in summary.by_channel.items())
        per_status = ", ".join(f"{name} {n}" for name, n in summary.by_status.items())
        self.stdout.write(f"In the database: {summary.total} communications ({per_channel}).")
        self.stdout.write(f"By status: {per_status}.")
        self.stdout.write(self.style.SUCCESS("Demo data loaded."))
