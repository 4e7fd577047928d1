"""What the pool commands share: the usage-error exit code, pool names, ``--json``.

Private: the commands and their exit codes are the public surface
(docs/operations.md), not this module.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from typing import Any, NoReturn

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ..._core.errors import ConfigurationError
from ...engines import pool_names

__all__ = [
    "FLEET_UNREACHABLE",
    "NOT_APPLIED",
    "USAGE_ERROR",
    "PoolCommand",
    "non_negative_seconds",
    "positive_seconds",
]

#: Exit code of a command that could not run as asked: a bad option, an
#: unknown pool, invalid settings. Not 1 or 2, which ``pool_check`` uses for
#: "degraded" and "unhealthy" (and argparse's own 2 would read as "unhealthy").
USAGE_ERROR = 3
#: Exit code of ``pool_status``, ``pool_advise`` and ``pool_reset`` when the FLEET cache
#: cannot be read: nothing is shown or done (``--local`` still works).
FLEET_UNREACHABLE = 2
#: Exit code of ``pool_reset`` when live processes had not applied it when the wait ended.
NOT_APPLIED = 4


class _Parser(CommandParser):
    """Django's parser, except that a usage error exits with :data:`USAGE_ERROR`."""

    def error(self, message: str) -> NoReturn:
        if self.called_from_command_line:
            # run_from_argv() parses before it catches CommandError, so a usage
            # error can only leave through argparse's own exit, as Django's does.
            self.print_usage(sys.stderr)
            self.exit(USAGE_ERROR, f"{self.prog}: error: {message}\n")
        raise CommandError(f"Error: {message}", returncode=USAGE_ERROR)


def positive_seconds(value: str) -> float:
    """An argparse ``type``: a number of seconds greater than zero."""
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
    if not seconds > 0 or seconds == float("inf"):
        raise argparse.ArgumentTypeError(f"{value!r} is not a positive number of seconds")
    return seconds


def non_negative_seconds(value: str) -> float:
    """An argparse ``type``: a number of seconds, 0 or more."""
    if value.strip() in ("0", "0.0"):
        return 0.0
    return positive_seconds(value)


class PoolCommand(BaseCommand):
    """Base of the pool commands: ``--json``, pool-name checks, usage errors exit 3.

    Subclasses implement :meth:`run`; a :class:`ConfigurationError` from the
    library (invalid ``MINGUS_SESSIONS``) becomes a usage error too.
    """

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        # Django builds a CommandParser itself and offers no hook for the class.
        parser.__class__ = _Parser
        return parser

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--json", action="store_true", help="Print JSON instead of the readable text."
        )

    def add_local(self, parser: CommandParser, what: str) -> None:
        """The ``--local`` switch: this process instead of every live process of the fleet."""
        parser.add_argument(
            "--local",
            action="store_true",
            help=f"{what} this command's own process only, instead of every live process of "
            'the fleet (read from the FLEET["CACHE"] cache).',
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            self.run(**options)
        except ConfigurationError as exc:
            raise CommandError(str(exc), returncode=USAGE_ERROR) from exc

    def run(self, **options: Any) -> None:
        raise NotImplementedError

    def pool_names(self, requested: Iterable[str] | None = None) -> list[str]:
        """``requested`` (duplicates dropped, order kept), or every pool; unknown names exit 3."""
        known = pool_names()
        if not requested:
            return list(known)
        names = list(dict.fromkeys(requested))
        unknown = [name for name in names if name not in known]
        if unknown:
            listed = ", ".join(f'"{name}"' for name in unknown)
            raise CommandError(
                f'No pool named {listed} in MINGUS_SESSIONS["POOLS"] (known: {", ".join(known)}).',
                returncode=USAGE_ERROR,
            )
        return names

    def write_json(self, payload: Any, *, indent: int | None = 2) -> None:
        self.stdout.write(json.dumps(payload, indent=indent))
