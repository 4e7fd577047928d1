"""The Django side of the settings: a cached reader over ``MINGUS_SESSIONS``.

Nothing is read at import time. :func:`get_config` parses the setting once and
caches the result in the registry; Django's ``setting_changed`` signal
(``override_settings`` in tests) makes the registry forget it, and dispose of
every engine built from the old values (``ProcessState.settings_changed``).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

from ._core.config import SETTING, Config, PoolConfig, Problem, parse_settings
from ._core.errors import ConfigurationError
from ._core.state import state

__all__ = [
    "database_settings",
    "database_time_zone",
    "get_config",
    "invalidate",
    "pool_config",
    "problems",
]

#: Settings whose change invalidates the cached configuration and the engines
#: (the time zone ones: engines set their connections' time zone from them).
_WATCHED = frozenset({SETTING, "DATABASES", "CACHES", "USE_TZ", "TIME_ZONE"})


def _importable(path: str) -> bool:
    module_name, _, attr = path.rpartition(".")
    if not module_name:
        return False
    try:
        return callable(getattr(importlib.import_module(module_name), attr))
    except (ImportError, AttributeError):
        return False


def problems() -> list[Problem]:
    """Every problem with the current settings and environment (for the system checks)."""
    return _parse()[1]


def _parse() -> tuple[Config | None, list[Problem]]:
    databases = {
        alias: str(entry.get("ENGINE", "")) if isinstance(entry, Mapping) else ""
        for alias, entry in settings.DATABASES.items()
    }
    return parse_settings(
        getattr(settings, SETTING, None),
        environ=os.environ,
        databases=databases,
        caches=tuple(getattr(settings, "CACHES", {}) or ("default",)),
        importable=_importable,
        database_settings=settings.DATABASES,
    )


def get_config() -> Config:
    """The validated configuration; :class:`ConfigurationError` if it is invalid."""
    config = state.config
    if config is not None:
        return config
    return _load()


def _load() -> Config:
    with state.lock:
        if state.config is None:
            config, found = _parse()
            if config is None:
                first = found[0]
                more = (
                    f" ({len(found) - 1} more problem(s): run manage.py check)"
                    if (len(found) > 1)
                    else ""
                )
                raise ConfigurationError(f"{first.msg} {first.hint}{more} [{first.id}]")
            state.config = config
        return state.config


def pool_config(pool: str | None) -> PoolConfig:
    """The settings of ``pool`` (the default pool for ``None``); ConfigurationError if unknown."""
    config = get_config()
    name = config.default_pool if pool is None else pool
    try:
        return config.pools[name]
    except KeyError:
        raise ConfigurationError(
            f'No pool named "{name}" in MINGUS_SESSIONS["POOLS"] '
            f"(known: {', '.join(config.pools)}).",
            pool=name,
        ) from None


def database_settings(alias: str) -> dict[str, Any]:
    """The live ``settings_dict`` of a database alias (the test database's in tests).

    ``connections.settings`` holds the same dict objects that each connection
    uses, and Django's test runner rewrites their ``NAME`` in place, so engines
    built from it follow the test database.
    """
    from django.db import connections

    try:
        return connections.settings[alias]  # type: ignore[no-any-return]
    except KeyError as exc:  # pragma: no cover - the checks report it first
        raise ConfigurationError(f'DATABASES has no alias "{alias}".') from exc


def database_time_zone(alias: str) -> str | None:
    """The time zone Django's connections to ``alias`` run in (as Django sets it on PostgreSQL).

    The rule of Django's ``timezone_name``: with ``USE_TZ``, the alias's own
    ``TIME_ZONE`` or else UTC; without it, ``TIME_ZONE``.
    """
    if not settings.USE_TZ:
        return str(settings.TIME_ZONE) if settings.TIME_ZONE else None
    return str(database_settings(alias).get("TIME_ZONE") or "UTC")


def invalidate() -> None:
    """Forget the cached configuration and dispose what was built from it."""
    state.settings_changed()


@receiver(setting_changed)
def _on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting in _WATCHED:
        invalidate()
    elif setting == "MIDDLEWARE":
        # The middleware reads its settings again, and looks at the new stack.
        state.request_pool = None
