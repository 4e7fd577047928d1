"""``manage.py pool_advise``: pool sizing advice and the capacity check per database."""

from __future__ import annotations

from typing import Any

from ...metrics.advice import advise_pools
from ._base import PoolCommand
from ._render import advice_lines


class Command(PoolCommand):
    help = (
        "Advise on pool sizes from what was observed (every live process of the fleet, or "
        "this process) and compare processes x (size + overflow) with each database "
        "server's max_connections."
    )

    def run(self, **options: Any) -> None:
        result = advise_pools()
        if options["json"]:
            self.write_json(result)
            return
        self.stdout.write("\n".join(advice_lines(result)))
