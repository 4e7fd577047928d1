"""``manage.py pool_status``: the pools of every live process of the fleet (or of this one)."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import time
from typing import Any

from django.core.management.base import CommandError, CommandParser

from ... import conf
from ...metrics._fleet import FleetView, pool_totals, read_fleet, session_totals
from ._base import FLEET_UNREACHABLE, PoolCommand, positive_seconds
from ._render import fleet_lines, pool_lines, replica_lines, session_line

#: Cursor home, then erase the screen (ANSI), before each redraw on a terminal.
_CLEAR = "\x1b[H\x1b[2J"


class Command(PoolCommand):
    help = (
        "Show each connection pool (size, connections in use and idle, waiters, utilization, "
        "acquire wait, timeouts, leaks, circuit breaker) and the session counters across every "
        "live process of the fleet, read from FLEET's cache, and one row per process; --local "
        "shows this command's own process instead."
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
        self.add_local(parser, "Show")
        # The fleet used to be an option; it is the default now. Kept so scripts still run.
        parser.add_argument("--fleet", action="store_true", help=argparse.SUPPRESS)

    def run(self, **options: Any) -> None:
        names = self.pool_names(options["pools"])
        watch: float | None = options["watch"]
        as_json: bool = options["json"]
        local: bool = options["local"]
        if watch is None:
            view = read_fleet(local=local)
            if view.problem is not None:
                raise CommandError(
                    f"{view.problem}; --local shows this process", returncode=FLEET_UNREACHABLE
                )
            self._show(view, names, as_json=as_json, indent=2)
            return
        clear = not as_json and self.stdout.isatty()
        try:
            while True:
                if clear:
                    self.stdout.write(_CLEAR, ending="")
                # An unreachable cache is shown and watched on: it may come back.
                self._show(read_fleet(local=local), names, as_json=as_json, indent=None)
                time.sleep(watch)
        except KeyboardInterrupt:
            # Ctrl-C is how watching ends: a normal exit.
            return

    def _show(
        self, view: FleetView, names: list[str], *, as_json: bool, indent: int | None
    ) -> None:
        now = dt.datetime.now(dt.UTC)
        processes = view.processes
        if view.source == "local":
            mine = processes[0]["pools"]
            pools = {name: mine[name] for name in names if name in mine}
        else:
            pools = pool_totals(processes, names)
        sessions = session_totals(processes)
        if as_json:
            payload: dict[str, Any] = {
                "pools": pools,
                "sessions": sessions,
                "timestamp": now.isoformat(),
                "source": view.source,
                "processes": processes,
            }
            if view.note:
                payload["note"] = view.note
            if view.problem:
                payload["error"] = view.problem
            self.write_json(payload, indent=indent)
            return
        self.stdout.write("\n".join(self._lines(view, pools, sessions, now)))

    def _lines(
        self,
        view: FleetView,
        pools: dict[str, dict[str, Any]],
        sessions: dict[str, int],
        now: dt.datetime,
    ) -> list[str]:
        at = f"{now:%Y-%m-%d %H:%M:%S} UTC"
        if view.source == "local":
            lines = [f"Pools of this process (pid {os.getpid()}) at {at}"]
        elif view.problem is not None:
            return [f"{view.problem}; --local shows this process ({at})"]
        else:
            cache = conf.get_config().fleet.cache
            lines = [
                f"Fleet at {at}: {len(view.processes)} live process(es) publishing to "
                f'FLEET["CACHE"] "{cache}"'
            ]
        if view.note:
            lines.append(f"Note: {view.note}.")
        if pools:
            lines += pool_lines(pools)
            if view.source == "fleet":
                lines.append(
                    "(SIZE+OVF per process; OUT, IDLE, OVERFLOW, WAITING, TIMEOUTS, LEAKS added "
                    "up; UTIL of the totals; ACQ P99 the highest of any process; BREAKER the "
                    "worst)"
                )
            lines += replica_lines(pools)
        lines += ["", session_line(sessions)]
        if view.source == "fleet":
            lines += ["", *fleet_lines(view.processes, now.timestamp())]
        return lines
