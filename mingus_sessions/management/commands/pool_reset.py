"""``manage.py pool_reset``: zero pools' metrics (and, with ``--dispose``, close their
connections) in every live process of the fleet, and say which processes did it."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser

from ... import conf
from ...metrics._fleet import ActionReport, run_action, wait_for_action
from ._base import (
    FLEET_UNREACHABLE,
    NOT_APPLIED,
    PoolCommand,
    non_negative_seconds,
)


class Command(PoolCommand):
    help = (
        "Reset the metrics of the named pools (or of all pools and the session counters) in "
        "every live process of the fleet: each applies it at its next sample, and the command "
        "waits for them (--wait) and lists which did. --dispose also closes their pooled "
        "connections, which are reopened on next use. --local acts on this command's own "
        "process only."
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
        parser.add_argument(
            "--wait",
            type=non_negative_seconds,
            metavar="SECONDS",
            help="How long to wait for every live process to apply it (default: two sample "
            'intervals, 2 x FLEET["INTERVAL"]); 0 does not wait.',
        )
        self.add_local(parser, "Act on")

    def run(self, **options: Any) -> None:
        every = options["all_pools"]
        names = self.pool_names() if every else self.pool_names(options["pools"])
        do = ["reset", "dispose"] if options["dispose"] else ["reset"]
        report = run_action(do, None if every else names, local=options["local"])
        if report.problem is not None:
            raise CommandError(
                f"{report.problem}: reset only in this command's own process, which serves "
                "nothing. Nothing reached the fleet; --local acts on this process on purpose.",
                returncode=FLEET_UNREACHABLE,
            )
        wait = options["wait"]
        if wait is None:
            wait = 2 * conf.get_config().fleet.interval
        if report.source == "fleet" and wait > 0:
            report = wait_for_action(report, wait)
        disposed = names if options["dispose"] else []
        if options["json"]:
            self.write_json(_payload(report, names, disposed))
        else:
            self.stdout.write("\n".join(_lines(report, names, disposed, every=every)))
        if report.problem is not None:
            raise CommandError(report.problem, returncode=FLEET_UNREACHABLE)
        pending = report.progress.get("pending", [])
        if report.source == "fleet" and wait > 0 and pending:
            raise CommandError(
                f"{len(pending)} live process(es) had not applied it after {wait:g} s: "
                f"{', '.join(pending)}",
                returncode=NOT_APPLIED,
            )


def _payload(report: ActionReport, names: list[str], disposed: list[str]) -> dict[str, Any]:
    payload: dict[str, Any] = {"reset": names, "disposed": disposed, "source": report.source}
    if report.source == "fleet":
        payload.update(
            {
                "action": report.action["id"],
                "processes": report.progress,
                "waited": round(report.waited, 3),
            }
        )
        if report.note:
            payload["note"] = report.note
    return payload


def _lines(
    report: ActionReport, names: list[str], disposed: list[str], *, every: bool
) -> list[str]:
    scope = " and the session counters" if every else ""
    if report.source == "local":
        lines = [f"Reset the metrics of {', '.join(names)}{scope} in this process."]
        if disposed:
            lines.append(
                f"Disposed {', '.join(disposed)}: idle connections closed, new ones on next use."
            )
        return lines
    what = f"the metrics of {', '.join(names)}{scope}"
    if disposed:
        what += ", and disposed their engines,"
    progress = report.progress
    applied, pending, gone = progress["applied"], progress["pending"], progress["gone"]
    targets = len(report.targets)
    lines = [f"Reset {what} across the fleet ({targets} live process(es) when it was issued)."]
    if report.note:
        lines.append(f"Note: {report.note}.")
    if not (applied or pending or gone):
        lines.append("No process of the fleet is live: there was no other process to reach.")
        return lines
    lines.append(
        f"Applied by {len(applied)} process(es) within {report.waited:.1f} s: "
        + (", ".join(applied) or "none yet")
    )
    if pending:
        lines.append(
            f"Not yet applied by {len(pending)}: {', '.join(pending)} (each applies it at its "
            "next sample, unless it stopped)"
        )
    if gone:
        lines.append(f"Left the fleet meanwhile: {', '.join(gone)}")
    return lines
