"""What the admin's pool actions do, and how each one is recorded.

An action runs on one pool or, where it makes sense, on every pool; each run
writes one admin log entry per pool it touched (content type
``ConnectionPool``, object id and repr the pool name, flag ``CHANGE``) and one
INFO record on the ``mingus_sessions`` logger, both naming the user.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from django.contrib.admin.models import CHANGE, LogEntry

from ..breakers import get_circuit_breaker
from ..engines import get_entry
from ..metrics.api import reset_metrics
from ..models import ConnectionPool

__all__ = ["ACTIONS", "PoolAction", "get_action"]

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
    run: Callable[[str], None]
    #: What to run once when acting on every pool (None: ``run`` for each pool).
    run_all: Callable[[Sequence[str]], None] | None = None
    applies_to_all: bool = False

    def perform(self, pools: Sequence[str], *, user: Any, every: bool = False) -> str:
        """Run on ``pools`` (``every``: all the configured pools), log it with ``user``.

        Returns the message that was logged, for the page to show.
        """
        if every and self.run_all is not None:
            self.run_all(pools)
        else:
            for name in pools:
                self.run(name)
        quoted = ", ".join(f'"{name}"' for name in pools)
        what = f"every pool ({quoted})" if every else f"pool {quoted}"
        message = self.done.format(what=what)
        LogEntry.objects.log_actions(
            user_id=user.pk,
            queryset=[ConnectionPool(name=name) for name in pools],
            action_flag=CHANGE,
            change_message=message,
        )
        logger.info("Admin user %s: %s", user.get_username(), message)
        return message


def _reset(pool: str) -> None:
    reset_metrics(pool)


def _reset_every_pool(pools: Sequence[str]) -> None:
    # reset_metrics() with no pool also zeroes the process's session counters.
    reset_metrics()


def _dispose(pool: str) -> None:
    # Checked-in connections close now; checked-out ones close when they are
    # returned. The listeners sit on the Engine, so metrics go on recording.
    get_entry(pool).engine.dispose()


def _reset_breaker(pool: str) -> None:
    get_circuit_breaker(pool).reset()


ACTIONS: dict[str, PoolAction] = {
    action.slug: action
    for action in (
        PoolAction(
            slug="reset",
            label="Reset metrics",
            done="Reset the metrics of {what}.",
            help="zero the counters and wait, hold and connect times",
            run=_reset,
            run_all=_reset_every_pool,
            applies_to_all=True,
        ),
        PoolAction(
            slug="dispose",
            label="Dispose engine",
            done="Disposed the engine of {what}.",
            help="close idle connections; connections in use close when returned",
            run=_dispose,
            applies_to_all=True,
        ),
        PoolAction(
            slug="reset-breaker",
            label="Reset circuit breaker",
            done="Reset the circuit breaker of {what}.",
            help="close the breaker and clear its failure count",
            run=_reset_breaker,
        ),
    )
}


def get_action(slug: str) -> PoolAction:
    """The action of ``slug`` (a KeyError for an unknown one: the URLs only route known ones)."""
    return ACTIONS[slug]
