"""The demo's fixed cast: five users and their communication preferences."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import time

__all__ = ["DEMO_MESSAGE_TYPES", "DEMO_USERS", "DemoUser"]


@dataclass(frozen=True, slots=True)
class DemoUser:
    username: str
    first_name: str
    sms_enabled: bool
    email_enabled: bool
    quiet_hours: tuple[time, time] | None


DEMO_USERS: tuple[DemoUser, ...] = (
    DemoUser("ada", "Ada", True, True, (time(22, 0), time(7, 0))),
    DemoUser("grace", "Grace", True, False, None),
    DemoUser("alan", "Alan", False, True, (time(23, 0), time(8, 0))),
    DemoUser("edsger", "Edsger", True, True, None),
    DemoUser("barbara", "Barbara", False, True, (time(21, 30), time(6, 30))),
)

#: Message types in the seeds' domain (financial wellness reminders).
DEMO_MESSAGE_TYPES: tuple[str, ...] = (
    "bill_reminder",
    "low_balance_alert",
    "weekly_checkin",
    "savings_milestone",
    "payday_summary",
)
