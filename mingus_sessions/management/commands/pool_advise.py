"""``manage.py pool_advise``: pool sizing advice and the capacity check per database."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser

from ...metrics.advice import advise_pools
from ._base import FLEET_UNREACHABLE, PoolCommand
from ._render import advice_lines


class Command(PoolCommand):
    help = (
        "Advise on pool sizes from what every live process of the fleet observed (--local: "
        "this command's own process) and compare processes x (size + overflow) with each "
        "database server's max_connections."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        self.add_local(parser, "Advise from")

    def run(self, **options: Any) -> None:
        result = advise_pools(local=options["local"])
        fleet = result["fleet"]
        if options["json"]:
            self.write_json(result)
        else:
            if "error" not in fleet:
                self.stdout.write(_source(fleet))
            self.stdout.write("\n".join(advice_lines(result)))
        if "error" in fleet:
            raise CommandError(
                f"{fleet['error']}: no advice (this process alone is not the deployment); "
                "--local advises from this process",
                returncode=FLEET_UNREACHABLE,
            )


def _source(fleet: dict[str, Any]) -> str:
    if fleet["source"] == "local":
        line = "From this process alone (--local)."
    else:
        line = f"From {fleet['processes']} live process(es) of the fleet."
    return f"{line} Note: {fleet['note']}." if fleet.get("note") else line
