"""``manage.py create_demo_admin``: a superuser for the demo's admin, and how to log in.

Creates the user, or resets its password (and superuser flags) if it exists, so
that the credentials it prints always work.
"""

from __future__ import annotations

import os
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from project.preflight import DEFAULT_HOST, PreflightError, browser_url, parse_demo_host


def admin_url() -> str:
    """The admin's URL where ``make demo`` serves it (``DEMO_HOST``)."""
    try:
        host, port = parse_demo_host(os.environ.get("DEMO_HOST") or DEFAULT_HOST)
    except PreflightError:
        host, port = parse_demo_host(DEFAULT_HOST)
    return f"{browser_url(host, port)}admin/"


class Command(BaseCommand):
    help = "Create (or reset the password of) the demo superuser and print its credentials."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", default="admin", help='Default: "admin".')
        parser.add_argument(
            "--password", default="mingus-demo", help='Default: "mingus-demo" (demo only).'
        )
        parser.add_argument("--email", default="admin@example.com")

    def handle(self, *args: Any, username: str, password: str, email: str, **options: Any) -> None:
        if not password:
            raise CommandError("--password must not be empty.")
        user_model = get_user_model()
        user = user_model.objects.filter(username=username).first()
        if user is None:
            user_model.objects.create_superuser(username=username, email=email, password=password)
            action = "created"
        else:
            user.set_password(password)
            user.is_staff = True
            user.is_superuser = True
            user.is_active = True
            user.save(update_fields=["password", "is_staff", "is_superuser", "is_active"])
            action = "updated (password reset)"

        self.stdout.write(self.style.SUCCESS(f'Demo admin user "{username}" {action}.'))
        self.stdout.write(f"  URL:      {admin_url()}")
        self.stdout.write(f"  Username: {username}")
        self.stdout.write(f"  Password: {password}")
        self.stdout.write("These credentials are for the local demo only.")
