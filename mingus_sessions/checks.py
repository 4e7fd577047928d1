"""System checks: every invalid setting, with a stable id and a hint.

The checks carry no ``database`` tag: they inspect settings and the environment
only, so they run the same way under ``manage.py check``, ``runserver``,
``migrate`` and the test runner on Django 5.2 and 6.x alike (database-tagged
checks only run when a command asks for them). The ids are listed in
``docs/checks.md``.
"""

from __future__ import annotations

from typing import Any

from django.core import checks

from . import conf


@checks.register("mingus_sessions")
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Report each problem with ``MINGUS_SESSIONS`` and its environment variables."""
    return [
        checks.Error(problem.msg, hint=problem.hint, id=problem.id) for problem in conf.problems()
    ]
