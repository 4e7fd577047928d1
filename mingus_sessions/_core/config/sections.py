"""The top-level keys of ``MINGUS_SESSIONS`` besides ``POOLS``, one reader per section.

The setting itself and its keys, the pool names (``DEFAULT_POOL``,
``CELERY_POOL``), monitoring and its thresholds, ``RETRY``,
``CIRCUIT_BREAKER``, ``FLEET``, ``METRICS_TOKEN``, ``REQUEST_COMMIT_HOOK`` and
``OPENTELEMETRY``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from typing import Any

from .environment import ENV_MONITORING, _parse_env_bool
from .readers import _Collector, _show
from .schema import DEFAULTS, SETTING, BreakerConfig, OtelConfig, RetryConfig, key_path

#: What a METRICS_TOKEN may be made of: the visible ASCII characters.
_VISIBLE_ASCII = re.compile(r"[\x21-\x7e]+")


def _check_setting(raw: Any, out: _Collector) -> Mapping[str, Any] | None:
    """The setting as a dict (``{}`` when absent) with its unknown keys reported, or None."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        out.add(
            1,
            f"{SETTING} must be a dict, not {_show(raw)}.",
            f"Define {SETTING} as a dict, or remove it to use the defaults.",
        )
        return None
    unknown = sorted(set(raw) - set(DEFAULTS), key=str)
    if unknown:
        out.add(
            2,
            f"{SETTING} has unknown keys: {', '.join(map(str, unknown))}.",
            f"The known keys are {', '.join(DEFAULTS)}; check the spelling.",
        )
    return raw


def _default_pool(
    raw: Mapping[str, Any], pools_given: Mapping[str, Any], known_pools: str, out: _Collector
) -> Any:
    """``DEFAULT_POOL``: a pool of ``POOLS`` (as given, checked only when POOLS is usable)."""
    default_pool = raw.get("DEFAULT_POOL", DEFAULTS["DEFAULT_POOL"])
    if pools_given and (not isinstance(default_pool, str) or default_pool not in pools_given):
        out.add(
            8,
            f"{key_path('DEFAULT_POOL')} names {_show(default_pool)}, which is not in "
            f"{key_path('POOLS')} (known: {known_pools}).",
            f"Set {key_path('DEFAULT_POOL')} to one of the pools, or add that pool.",
        )
    return default_pool


def _celery_pool(
    raw: Mapping[str, Any],
    pools_given: Mapping[str, Any],
    default_pool: Any,
    known_pools: str,
    out: _Collector,
) -> Any:
    """``CELERY_POOL``: a pool of ``POOLS``, or the default pool when left at its default."""
    # CELERY_POOL falls back to the default pool when it is left at its default
    # and no such pool exists; naming a missing pool explicitly is an error.
    celery_pool = raw.get("CELERY_POOL", DEFAULTS["CELERY_POOL"])
    if not isinstance(celery_pool, str) or celery_pool not in pools_given:
        if "CELERY_POOL" in raw and pools_given:
            out.add(
                9,
                f"{key_path('CELERY_POOL')} names {_show(celery_pool)}, which is not in "
                f"{key_path('POOLS')} (known: {known_pools}).",
                f"Set {key_path('CELERY_POOL')} to one of the pools, or remove it to use "
                f"{key_path('DEFAULT_POOL')}.",
            )
        celery_pool = default_pool
    return celery_pool


def _monitoring(raw: Mapping[str, Any], environ: Mapping[str, str], out: _Collector) -> Any:
    """``MONITORING`` as given, or as ``DB_ENABLE_MONITORING`` overrides it (still unchecked)."""
    monitoring: Any = raw.get("MONITORING", DEFAULTS["MONITORING"])
    env_monitoring = environ.get(ENV_MONITORING)
    if env_monitoring is not None:
        parsed_env = _parse_env_bool(env_monitoring, ENV_MONITORING, out, allow_debug=False)
        monitoring = monitoring if parsed_env is None else parsed_env
    return monitoring


def _threshold(
    raw: Mapping[str, Any], key: str, out: _Collector, *, default: float
) -> float | None:
    """``SLOW_QUERY_THRESHOLD`` or ``LEAK_THRESHOLD``: seconds, or None to turn it off."""
    return out.number(raw.get(key, DEFAULTS[key]), key_path(key), allow_none=True, default=default)


def _flag(value: Any, key: str, out: _Collector) -> bool:
    """A top-level True or False: ``MONITORING`` or ``LOG_QUERY_PARAMETERS``."""
    return bool(out.boolean(value, key_path(key)))


def _merge_section(raw: Mapping[str, Any], section: str, out: _Collector) -> dict[str, Any]:
    """``RETRY``, ``CIRCUIT_BREAKER`` or ``FLEET`` merged over its defaults key by key."""
    defaults: Mapping[str, Any] = DEFAULTS[section]
    given = raw.get(section, {})
    if not isinstance(given, Mapping):
        out.add(
            2,
            f"{key_path(section)} must be a dict, not {_show(given)}.",
            f"Use a dict with the keys {', '.join(defaults)}.",
        )
        return dict(defaults)
    unknown = sorted(set(given) - set(defaults), key=str)
    if unknown:
        out.add(
            2,
            f"{key_path(section)} has unknown keys: {', '.join(map(str, unknown))}.",
            f"The known keys are {', '.join(defaults)}; check the spelling.",
        )
    return {**defaults, **{k: v for k, v in given.items() if k in defaults}}


def _retry(retry: Mapping[str, Any], out: _Collector) -> RetryConfig:
    """``RETRY``: the attempts and the delays between them, the cap no lower than the first."""
    config = RetryConfig(
        max_retries=out.integer(
            retry["MAX_RETRIES"], key_path("RETRY", "MAX_RETRIES"), minimum=0, default=3
        ),
        base_delay=out.number(retry["BASE_DELAY"], key_path("RETRY", "BASE_DELAY"), default=0.1)
        or 0.1,
        max_delay=out.number(retry["MAX_DELAY"], key_path("RETRY", "MAX_DELAY"), default=30.0)
        or 30.0,
        jitter=bool(out.boolean(retry["JITTER"], key_path("RETRY", "JITTER"))),
    )
    if config.max_delay < config.base_delay:
        out.add(
            7,
            f"{key_path('RETRY', 'MAX_DELAY')} ({config.max_delay}) is below "
            f"{key_path('RETRY', 'BASE_DELAY')} ({config.base_delay}).",
            "The cap on the delay must be at least the first delay.",
        )
    return config


def _breaker(breaker: Mapping[str, Any], out: _Collector) -> BreakerConfig:
    """``CIRCUIT_BREAKER``: on or off, how many failures open it, how long it stays open, and
    whether the fleet shares it."""
    return BreakerConfig(
        enabled=bool(out.boolean(breaker["ENABLED"], key_path("CIRCUIT_BREAKER", "ENABLED"))),
        failure_threshold=out.integer(
            breaker["FAILURE_THRESHOLD"],
            key_path("CIRCUIT_BREAKER", "FAILURE_THRESHOLD"),
            minimum=1,
            default=5,
        ),
        recovery_timeout=out.number(
            breaker["RECOVERY_TIMEOUT"],
            key_path("CIRCUIT_BREAKER", "RECOVERY_TIMEOUT"),
            default=60.0,
        )
        or 60.0,
        shared=bool(out.boolean(breaker["SHARED"], key_path("CIRCUIT_BREAKER", "SHARED"))),
    )


def _fleet_cache(fleet: Mapping[str, Any], caches: Collection[str], out: _Collector) -> str:
    """``FLEET["CACHE"]``: the ``CACHES`` alias that the processes share their pools through."""
    fleet_cache = fleet["CACHE"]
    if not isinstance(fleet_cache, str) or fleet_cache not in caches:
        out.add(
            15,
            f"{key_path('FLEET', 'CACHE')} names {_show(fleet_cache)}, which is not in "
            f"CACHES (known: {', '.join(sorted(caches)) or 'none'}).",
            f"Set {key_path('FLEET', 'CACHE')} to a CACHES alias (a shared cache such as "
            "Redis lets every process see the fleet).",
        )
        return "default"
    return fleet_cache


def _fleet_interval(fleet: Mapping[str, Any], out: _Collector) -> float:
    """``FLEET["INTERVAL"]``: seconds between two reports of a process's pools."""
    return out.number(fleet["INTERVAL"], key_path("FLEET", "INTERVAL"), default=10.0) or 10.0


def _metrics_token(raw: Mapping[str, Any], out: _Collector) -> str | None:
    """``METRICS_TOKEN``: None, or a non-empty string of visible ASCII characters."""
    token = raw.get("METRICS_TOKEN")
    if token is not None and (not isinstance(token, str) or not token):
        out.add(
            16,
            f"{key_path('METRICS_TOKEN')} must be a non-empty string or None.",
            f"Set {key_path('METRICS_TOKEN')} to a long random string, or None.",
        )
        return None
    if token is not None and not _VISIBLE_ASCII.fullmatch(token):
        # WSGI servers hand request headers over decoded as Latin-1: a token
        # that clients send as UTF-8 would never match (Django's test client
        # passes the text itself, so tests would not notice), and spaces
        # around it are stripped from the header.
        out.add(
            16,
            f"{key_path('METRICS_TOKEN')} has characters other than visible ASCII (letters, "
            "digits and punctuation, no spaces): servers such as gunicorn read request "
            "headers as Latin-1, so a client sending it would be refused.",
            f"Set {key_path('METRICS_TOKEN')} to a long random ASCII string, e.g. the output "
            'of python -c "import secrets; print(secrets.token_urlsafe(32))".',
        )
        return None
    return token


def _commit_hook(
    raw: Mapping[str, Any], importable: Callable[[str], bool] | None, out: _Collector
) -> str | None:
    """``REQUEST_COMMIT_HOOK``: None, or a dotted path that ``importable`` accepts."""
    hook = raw.get("REQUEST_COMMIT_HOOK")
    if hook is not None and (
        not isinstance(hook, str) or (importable is not None and not importable(hook))
    ):
        out.add(
            16,
            f"{key_path('REQUEST_COMMIT_HOOK')} is {_show(hook)}, not the dotted path of "
            "an importable callable.",
            f"Set {key_path('REQUEST_COMMIT_HOOK')} to a path such as "
            '"myproject.hooks.should_commit", or None.',
        )
        return None
    return hook


def _opentelemetry(raw: Mapping[str, Any], out: _Collector) -> OtelConfig:
    """``OPENTELEMETRY``: True or False for both signals, or ``{"METRICS": .., "TRACES": ..}``."""
    given = raw.get("OPENTELEMETRY", DEFAULTS["OPENTELEMETRY"])
    hint = (
        f'Set {key_path("OPENTELEMETRY")} to {{"METRICS": True, "TRACES": True}} (either '
        "may be False), or to False to emit nothing through OpenTelemetry."
    )
    if isinstance(given, bool):
        return OtelConfig(metrics=given, traces=given)
    if not isinstance(given, Mapping):
        out.add(
            21,
            f"{key_path('OPENTELEMETRY')} must be a dict or a boolean, not {_show(given)}.",
            hint,
        )
        return OtelConfig(metrics=False, traces=False)
    unknown = sorted(set(given) - {"METRICS", "TRACES"}, key=str)
    if unknown:
        out.add(
            21,
            f"{key_path('OPENTELEMETRY')} has unknown keys: {', '.join(map(str, unknown))}.",
            hint,
        )
    flags = {}
    for key in ("METRICS", "TRACES"):
        value = given.get(key, True)
        if not isinstance(value, bool):
            out.add(
                21,
                f"{key_path('OPENTELEMETRY', key)} is {_show(value)}, not True or False.",
                f"Set {key_path('OPENTELEMETRY', key)} to True or False.",
            )
            value = False
        flags[key] = value
    return OtelConfig(metrics=flags["METRICS"], traces=flags["TRACES"])
