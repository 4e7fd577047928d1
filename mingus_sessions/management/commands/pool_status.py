"""``manage.py pool_status``: each pool's gauges, counters and breaker, and the sessions."""

from __future__ import annotations

import datetime as dt
import os
import time
from typing import Any

from django.core.management.base import CommandParser

from ...metrics.api import get_pool_metrics, get_session_stats
from ...monitor import get_fleet_metrics
from ._base import PoolCommand, positive_seconds
from ._render import fleet_lines, pool_lines, session_line

#: Cursor home, then erase the screen (ANSI), before each redraw on a terminal.
_CLEAR = "\x1b[H\x1b[2J"


class Command(PoolCommand):
    help = (
        "Show each connection pool (size, connections in use and idle, waiters, utilization, "
        "acquire wait, timeouts, leaks, circuit breaker) and the session counters of this "
        "process; --fleet adds every process that publishes to the fleet cache."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument(
            "--pool",
            action="append",
            dest="pools",
            metavar="NAME",
            help="Only this pool (repeat for several); default: every pool.",
        )
        parser.add_argument(
            "--watch",
            type=positive_seconds,
            metavar="SECONDS",
            help="Redraw every SECONDS until interrupted (Ctrl-C); with --json, one "
            "JSON document per line.",
        )
        parser.add_argument(
            "--fleet",
            action="store_true",
            help="Also show every live process of the fleet (read from FLEET's cache).",
        )

    def run(self, **options: Any) -> None:
        names = self.pool_names(options["pools"])
        watch: float | None = options["watch"]
        as_json: bool = options["json"]
        if watch is None:
            self._show(names, fleet=options["fleet"], as_json=as_json, indent=2)
            return
        clear = not as_json and self.stdout.isatty()
        try:
            while True:
                if clear:
                    self.stdout.write(_CLEAR, ending="")
                self._show(names, fleet=options["fleet"], as_json=as_json, indent=None)
                time.sleep(watch)
        except KeyboardInterrupt:
            # Ctrl-C is how watching ends: a normal exit.
            return

    def _show(self, names: list[str], *, fleet: bool, as_json: bool, indent: int | None) -> None:
        now = dt.datetime.now(dt.UTC)
        pools = {name: get_pool_metrics(name).as_dict() for name in names}
        sessions = get_session_stats()
        processes = get_fleet_metrics() if fleet else None
        if as_json:
            payload: dict[str, Any] = {
                "pools": pools,
                "sessions": sessions,
                "timestamp": now.isoformat(),
            }
            if processes is not None:
                payload["fleet"] = processes
            self.write_json(payload, indent=indent)
            return
        lines = [
            f"Pools of this process (pid {os.getpid()}) at {now:%Y-%m-%d %H:%M:%S} UTC",
            *pool_lines(pools),
            "",
            session_line(sessions),
        ]
        if processes is not None:
            lines += ["", f"Fleet ({len(processes)} live process(es)):"]
            lines += fleet_lines(processes, now.timestamp())
        self.stdout.write("\n".join(lines))
