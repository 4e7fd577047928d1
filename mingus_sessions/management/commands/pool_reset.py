"""``manage.py pool_reset``: zero pools' metrics and, with ``--dispose``, close their engines."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from ...engines import get_entry
from ...metrics.api import reset_metrics
from ._base import PoolCommand


class Command(PoolCommand):
    help = (
        "Reset the metrics of the named pools (or of all pools and the session counters) in "
        "the process that runs it; --dispose also closes their pooled connections, which "
        "are reopened on next use."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        which = parser.add_mutually_exclusive_group(required=True)
        which.add_argument(
            "--pool",
            action="append",
            dest="pools",
            metavar="NAME",
            help="This pool (repeat for several).",
        )
        which.add_argument(
            "--all",
            action="store_true",
            dest="all_pools",
            help="Every pool, and the session and transaction counters.",
        )
        parser.add_argument(
            "--dispose",
            action="store_true",
            help="Also dispose the engines: idle connections are closed now, those in use are "
            "let go when their sessions end, and new ones are opened on next use.",
        )

    def run(self, **options: Any) -> None:
        if options["all_pools"]:
            names = self.pool_names()
            reset_metrics()
        else:
            names = self.pool_names(options["pools"])
            for name in names:
                reset_metrics(name)
        disposed: list[str] = []
        if options["dispose"]:
            for name in names:
                get_entry(name).engine.dispose()
                disposed.append(name)
        if options["json"]:
            self.write_json({"reset": names, "disposed": disposed})
            return
        scope = " and the session counters" if options["all_pools"] else ""
        self.stdout.write(f"Reset the metrics of {', '.join(names)}{scope}.")
        if disposed:
            self.stdout.write(
                f"Disposed {', '.join(disposed)}: idle connections closed, new ones on next use."
            )
