"""What the admin's pool actions do, and how each one is recorded.

An action runs on one pool or, where it makes sense, on every pool, and in
every live process of the fleet: the process that serves the POST applies it at
once and lists it in the ``FLEET`` cache, where every other process picks it up
at its next sample (within one ``FLEET["INTERVAL"]``) and then says so in its
snapshot. The request does not wait for them: the message says how many were
still to apply it, and :func:`fleet_actions` (the dashboard's, and
``dashboard/database``'s ``actions``) shows which did. Each run writes one
admin log entry per pool it touched (content type ``ConnectionPool``, object id
and repr the pool name, flag ``CHANGE``) and one INFO record on the
``mingus_sessions`` logger, both naming the user.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.contrib.admin.models import CHANGE, LogEntry

from .. import conf
from ..metrics._fleet import ActionReport, fleet_actions, run_action
from ..models import ConnectionPool

__all__ = ["ACTIONS", "PoolAction", "fleet_actions", "get_action"]

logger = logging.getLogger("mingus_sessions")


@dataclass(frozen=True, slots=True)
class PoolAction:
    """One action: its URL slug, button label, and what it does to one pool or to all."""

    slug: str
    label: str
    #: The log and success message; ``{what}`` becomes ``pool "a"`` or ``every pool ("a", "b")``.
    done: str
    #: Shown next to the button: what the action does, in a few words.
    help: str
    #: What each process does (``mingus_sessions.fleet.KINDS``).
    do: tuple[str, ...]
    applies_to_all: bool = False

    def perform(self, pools: Sequence[str], *, user: Any, every: bool = False) -> str:
        """Run on ``pools`` (``every``: all the configured pools) across the fleet, log it
        with ``user``.

        Returns the message to show: what was logged, and how far it reached.
        """
        # "Every pool" of reset also zeroes the session counters (pools=None).
        report = run_action(self.do, None if every and self.slug == "reset" else list(pools))
        quoted = ", ".join(f'"{name}"' for name in pools)
        what = f"every pool ({quoted})" if every else f"pool {quoted}"
        message = self.done.format(what=what)
        LogEntry.objects.log_actions(
            user_id=user.pk,
            queryset=[ConnectionPool(name=name) for name in pools],
            action_flag=CHANGE,
            change_message=message,
        )
        reach = _reach(report)
        logger.info("Admin user %s: %s%s", user.get_username(), message, reach)
        return f"{message}{reach}"


def _reach(report: ActionReport) -> str:
    """How far an action got when the page answers, as a sentence to add ("" when this
    process, the only live one, applied it: nothing more to say)."""
    here = report.here or "this process"
    if report.problem is not None:
        return f" Applied in {here} only: {report.problem}."
    pending = report.progress["pending"]
    if not pending:
        return ""
    interval = conf.get_config().fleet.interval
    return (
        f" Applied in {here} at once; {len(pending)} other live process(es) apply it at their "
        f"next sample (within {interval:g} s): the fleet table shows which did."
    )


ACTIONS: dict[str, PoolAction] = {
    action.slug: action
    for action in (
        PoolAction(
            slug="reset",
            label="Reset metrics",
            done="Reset the metrics of {what}.",
            help="zero the counters and wait, hold and connect times, in every process",
            do=("reset",),
            applies_to_all=True,
        ),
        PoolAction(
            slug="dispose",
            label="Dispose engine",
            done="Disposed the engine of {what}.",
            help="close idle connections in every process; connections in use close when returned",
            do=("dispose",),
            applies_to_all=True,
        ),
        PoolAction(
            slug="reset-breaker",
            label="Reset circuit breaker",
            done="Reset the circuit breaker of {what}.",
            help="close the breaker and clear its failure count, in every process",
            do=("reset-breaker",),
        ),
    )
}


def get_action(slug: str) -> PoolAction:
    """The action of ``slug`` (a KeyError for an unknown one: the URLs only route known ones)."""
    return ACTIONS[slug]
