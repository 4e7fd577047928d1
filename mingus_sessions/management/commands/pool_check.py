"""``manage.py pool_check``: health of the pools, as an exit code.

By default the worst of two views: whether this process reaches each database now
(a ``SELECT 1`` with a deadline, and why not when it cannot) and what every live
process of the fleet last sampled (breakers, saturation). ``--local`` checks this
process alone: what a container's probe asks.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser

from ..._core.errors import ConfigurationError
from ...engines import get_entry
from ...metrics._fleet import FleetView, fleet_health, read_fleet
from ...metrics.api import (
    DEFAULT_HEALTH_TIMEOUT,
    MISCONFIGURED,
    check_all_pools,
    overall_status,
)
from ._base import USAGE_ERROR, PoolCommand, positive_seconds

#: Exit code per overall status; 3 (a usage error) is the _base's.
EXIT_CODES = {"healthy": 0, "degraded": 1, "unhealthy": 2}


#: Statuses from best to worst.
_ORDER = {"healthy": 0, "degraded": 1, "unhealthy": 2}


class Command(PoolCommand):
    help = (
        "Check that each pool reaches its database in time from this process, and what every "
        "live process of the fleet last sampled (--local: this process only). Exit 0 healthy, "
        "1 degraded (saturated or breaker recovering), 2 unhealthy (unreachable, breaker open, "
        "no answer within --timeout), 3 usage or configuration error."
    )
    # A probe runs every few seconds: skip the system checks (and their exit
    # code 1, which would read as "degraded"); invalid settings still exit 3.
    requires_system_checks: list[str] = []

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
            "--timeout",
            type=positive_seconds,
            default=DEFAULT_HEALTH_TIMEOUT,
            metavar="SECONDS",
            help=f"Answer within this many seconds (default {DEFAULT_HEALTH_TIMEOUT:g}), "
            "even if a database hangs.",
        )
        self.add_local(parser, "Check")

    def run(self, **options: Any) -> None:
        names = self.pool_names(options["pools"])
        for name in names:
            # A pool whose settings cannot build an engine is a usage error (exit
            # 3), which check_all_pools, answering for a health endpoint, would
            # report as one more unusable pool. Any other failure to build it
            # (a missing driver) is left for check_all_pools to report so.
            try:
                get_entry(name)
            except ConfigurationError:
                raise
            except Exception:  # noqa: BLE001 - reported as unusable below
                continue
        try:
            results = check_all_pools(timeout=options["timeout"], pools=names)
        except ConfigurationError:
            raise
        except Exception as exc:
            # Whatever stops the check (a missing driver, say) means the
            # pools cannot be used: a probe must read it as unhealthy.
            raise CommandError(
                f"unhealthy: the check failed ({type(exc).__name__}); rerun with --traceback",
                returncode=EXIT_CODES["unhealthy"],
            ) from exc
        # check_all_pools lists the pools decided without a ping first; show the pools' order.
        results = {name: results[name] for name in names}
        misconfigured = [
            f"{name}: {r['detail']}"
            for name, r in results.items()
            if r["detail"].startswith(MISCONFIGURED)
        ]
        if misconfigured:
            # The settings' fault, not the database's: a usage error, as for
            # settings that cannot build an engine.
            raise CommandError("; ".join(misconfigured), returncode=USAGE_ERROR)
        view = FleetView("local") if options["local"] else read_fleet()
        results, processes = _with_fleet(results, view, names)
        status = overall_status(results)
        if options["json"]:
            payload: dict[str, Any] = {
                "status": status,
                "pools": {
                    name: {"status": r["status"], "detail": r["detail"]}
                    for name, r in results.items()
                },
                "source": view.source,
            }
            if view.source == "fleet":
                payload["processes"] = processes
                payload["fleet"] = _fleet_line(view)
            self.write_json(payload)
        else:
            for name, result in results.items():
                self.stdout.write(f"{name}: {result['status']} ({result['detail']})")
            if view.source == "fleet":
                self.stdout.write(f"fleet: {_fleet_line(view)}")
            self.stdout.write(f"overall: {status}")
        if status != "healthy":
            failing = ", ".join(
                f"{name} {r['status']} ({r['detail']})"
                for name, r in results.items()
                if r["status"] != "healthy"
            )
            raise CommandError(f"{status}: {failing}", returncode=EXIT_CODES[status])


def _fleet_line(view: FleetView) -> str:
    """What the fleet part of the check rests on, in one line."""
    if view.problem is not None:
        return f"not checked: {view.problem}"
    line = f"{len(view.processes)} live process(es)"
    return f"{line}; {view.note}" if view.note else line


def _with_fleet(
    results: dict[str, dict[str, Any]], view: FleetView, names: list[str]
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """This process's results made worse by the fleet's, and each process's own statuses."""
    if view.source != "fleet" or not view.processes:
        return results, {}
    fleet = fleet_health(view.processes, names)
    combined: dict[str, dict[str, Any]] = {}
    for name, here in results.items():
        seen = fleet[name]
        if _ORDER[seen["status"]] > _ORDER[here["status"]]:
            here = {**here, "status": seen["status"], "detail": f"fleet: {seen['detail']}"}
        combined[name] = here
    per_process: dict[str, dict[str, Any]] = {}
    for name in names:
        for process, found in fleet[name]["processes"].items():
            per_process.setdefault(process, {})[name] = found
    return combined, per_process
