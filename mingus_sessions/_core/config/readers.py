"""The typed readers: each checks one value, records a problem, and falls back to a default.

Every parser of the settings writes into one :class:`_Collector`, so that a
single run reports every mistake at once, in the order the settings are read.
"""

from __future__ import annotations

import math
from typing import Any

from .schema import MAX_SECONDS, Problem


class _Collector:
    """Accumulates problems while values are read; each reader returns a default on error."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def add(self, check_id: int, msg: str, hint: str) -> None:
        """Record the problem ``mingus_sessions.E<check_id>``."""
        self.problems.append(Problem(f"mingus_sessions.E{check_id:03d}", msg, hint))

    # -- typed readers ----------------------------------------------------------------

    def integer(self, value: Any, where: str, *, minimum: int, default: int) -> int:
        """A whole number (not a bool) of at least ``minimum`` (E007)."""
        if isinstance(value, bool) or not isinstance(value, int):
            self.add(
                7,
                f"{where} must be an integer, not {_show(value)}.",
                f"Set {where} to a whole number of at least {minimum}.",
            )
            return default
        if value < minimum:
            self.add(
                7,
                f"{where} is {value}, below the minimum of {minimum}.",
                f"Set {where} to {minimum} or more.",
            )
            return default
        return value

    def number(
        self,
        value: Any,
        where: str,
        *,
        positive: bool = True,
        allow_none: bool = False,
        default: float = 1.0,
    ) -> float | None:
        """A finite number of seconds up to ``MAX_SECONDS``, above 0 if ``positive`` (E007)."""
        if value is None and allow_none:
            return None
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            also = " or None" if allow_none else ""
            self.add(
                7,
                f"{where} must be a number of seconds{also}, not {_show(value)}.",
                f"Set {where} to a positive number such as {default}.",
            )
            return default
        if positive and value <= 0:
            self.add(
                7,
                f"{where} is {value}; it must be greater than 0.",
                f"Set {where} to a positive number such as {default}.",
            )
            return default
        if value > MAX_SECONDS:
            self.add(
                7,
                f"{where} is {value:g} seconds, above the maximum of {MAX_SECONDS} (a day).",
                f"Set {where} to a number of seconds no greater than {MAX_SECONDS}"
                + (", or None to turn it off." if allow_none else "."),
            )
            return default
        return float(value)

    def boolean(
        self, value: Any, where: str, *, allow_debug: bool = False, also: str | None = None
    ) -> bool | str:
        """True or False, or "debug" where ``allow_debug``, or the word ``also`` (E011)."""
        if isinstance(value, bool):
            return value
        if allow_debug and value == "debug":
            return "debug"
        if also is not None and value == also:
            return also
        if allow_debug:
            choices = 'True, False or "debug"'
        elif also is not None:
            choices = f'True, False or "{also}"'
        else:
            choices = "True or False"
        self.add(
            11, f"{where} must be {choices}, not {_show(value)}.", f"Set {where} to {choices}."
        )
        return False


def _show(value: Any) -> str:
    """The value as a message quotes it: its repr, cut to 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
