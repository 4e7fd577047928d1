"""What the command tests share: running a command in this process, a dead pool, a terminal."""

from __future__ import annotations

import io
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from tests.helpers import add_alias
from tests.surfaces.helpers import configure

#: The exit code of a usage or configuration error (docs/operations.md).
USAGE_ERROR = 3
#: A password that must never appear in any command's output.
SECRET = "s3cret-command-password-never-shown"


def run(*args: str, **options: Any) -> str:
    """``call_command(*args)``; its stdout."""
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO(), **options)
    return out.getvalue()


def run_failing(*args: str) -> tuple[CommandError, str]:
    """``call_command(*args)`` that must raise CommandError; the error and the stdout."""
    out = io.StringIO()
    with pytest.raises(CommandError) as info:
        call_command(*args, stdout=out, stderr=io.StringIO())
    return info.value, out.getvalue()


def add_dead_pool(
    settings: Any, monkeypatch: pytest.MonkeyPatch, port: int, **database: Any
) -> None:
    """A pool "dead" on a PostgreSQL alias at 127.0.0.1:``port``, with a secret password."""
    pytest.importorskip("psycopg")
    add_alias(
        monkeypatch,
        "dead",
        {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": "dead",
            "USER": "postgres",
            "PASSWORD": SECRET,
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "OPTIONS": {"connect_timeout": 5},
            **database,
        },
    )
    configure(
        settings,
        {"dead": {"DATABASE": "dead", "POOL_SIZE": 2, "MAX_OVERFLOW": 0, "POOL_TIMEOUT": 10}},
    )


class Terminal(io.StringIO):
    """A captured stdout that says it is a terminal."""

    def isatty(self) -> bool:
        return True
