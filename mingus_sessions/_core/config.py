"""The settings schema: ``MINGUS_SESSIONS`` plus the environment, validated.

Plain Python with no Django import: :func:`parse_settings` turns the user's dict,
the environment and the names of the configured databases and caches into a
frozen :class:`Config`, or into a list of :class:`Problem` that the system checks
report and that :class:`~mingus_sessions.errors.ConfigurationError` quotes.
:mod:`mingus_sessions.conf` is the Django side that feeds it.
"""

from __future__ import annotations

import importlib
import math
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

__all__ = [
    "DEFAULTS",
    "POOL_DEFAULTS",
    "BreakerConfig",
    "Config",
    "FleetConfig",
    "PoolConfig",
    "Problem",
    "RetryConfig",
    "parse_settings",
]

SETTING = "MINGUS_SESSIONS"

DEFAULTS: Mapping[str, Any] = MappingProxyType(
    {
        "DEFAULT_POOL": "main",
        "CELERY_POOL": "celery",
        "POOLS": {"main": {"DATABASE": "default"}},
        "MONITORING": True,
        "SLOW_QUERY_THRESHOLD": 1.0,
        "LOG_QUERY_PARAMETERS": False,
        "LEAK_THRESHOLD": 30.0,
        "RETRY": {"MAX_RETRIES": 3, "BASE_DELAY": 0.1, "MAX_DELAY": 30.0, "JITTER": True},
        "CIRCUIT_BREAKER": {"ENABLED": True, "FAILURE_THRESHOLD": 5, "RECOVERY_TIMEOUT": 60.0},
        "FLEET": {"CACHE": "default", "INTERVAL": 10.0},
        "METRICS_TOKEN": None,
        "REQUEST_COMMIT_HOOK": None,
    }
)

POOL_DEFAULTS: Mapping[str, Any] = MappingProxyType(
    {
        "DATABASE": "default",
        "POOL_CLASS": "queue",
        "POOL_SIZE": 5,
        "MAX_OVERFLOW": 10,
        "POOL_RECYCLE": 1800,
        "POOL_TIMEOUT": 30,
        "PRE_PING": True,
        "USE_LIFO": False,
        "ECHO": False,
        "ECHO_POOL": False,
        "READ_ONLY": False,
        "ISOLATION_LEVEL": None,
        "CONNECT_ARGS": {},
        "SOCKET_TIMEOUT": 30,
        "PGBOUNCER": None,
        "PGBOUNCER_PREPARED": False,
    }
)

#: Database backends whose engines this package knows how to build.
SUPPORTED_ENGINES = {
    "django.db.backends.postgresql": "postgresql",
    "django.db.backends.sqlite3": "sqlite",
    "django.db.backends.mysql": "mysql",
    "django.db.backends.oracle": "oracle",
    # GeoDjango's backends are the same databases. SpatiaLite's functions are not
    # loaded into SQLAlchemy's connections (see docs/configuration.md).
    "django.contrib.gis.db.backends.postgis": "postgresql",
    "django.contrib.gis.db.backends.spatialite": "sqlite",
    "django.contrib.gis.db.backends.mysql": "mysql",
    "django.contrib.gis.db.backends.oracle": "oracle",
}

SUPPORTED_SUMMARY = (
    "Supported: PostgreSQL, SQLite, MySQL/MariaDB and Oracle, through Django's own "
    "backends or GeoDjango's."
)

ISOLATION_LEVELS = (
    "AUTOCOMMIT",
    "READ UNCOMMITTED",
    "READ COMMITTED",
    "REPEATABLE READ",
    "SERIALIZABLE",
)

BUILTIN_POOL_CLASSES = ("queue", "null")

#: PgBouncer's ``pool_mode`` values that ``PGBOUNCER`` accepts (``statement`` mode
#: allows no multi-statement transaction, so no session scope could work there).
PGBOUNCER_MODES = ("transaction", "session")

#: The smallest ``SOCKET_TIMEOUT`` (seconds): libpq will not time a connect
#: attempt out in under 2 s, and a lost peer needs a few keepalive probes.
MIN_SOCKET_TIMEOUT = 5

# Environment variables per pool, as the seeds named them: ``DB_POOL_SIZE`` for
# the pool ``main``, ``CELERY_DB_POOL_SIZE`` for the pool ``celery``.
_ENV_POOL_KEYS = {
    "POOL_SIZE": "DB_POOL_SIZE",
    "MAX_OVERFLOW": "DB_MAX_OVERFLOW",
    "POOL_RECYCLE": "DB_POOL_RECYCLE",
    "POOL_TIMEOUT": "DB_POOL_TIMEOUT",
    "ECHO": "DB_ECHO",
    "ECHO_POOL": "DB_ECHO_POOL",
}
ENV_MONITORING = "DB_ENABLE_MONITORING"
_PRIMARY_POOL = "main"

#: The longest duration any setting may give, in seconds (a day). Far beyond
#: any sensible timeout or delay, and far below the limits of the clocks and
#: waits that use them (``threading.TIMEOUT_MAX``, ``time_t``), which would
#: otherwise raise OverflowError in the middle of a checkout or a retry.
MAX_SECONDS = 86400

#: What a METRICS_TOKEN may be made of: the visible ASCII characters.
_VISIBLE_ASCII = re.compile(r"[\x21-\x7e]+")

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


@dataclass(frozen=True, slots=True)
class Problem:
    """One invalid setting: a stable check id, a message quoting the key, a hint."""

    id: str
    msg: str
    hint: str


@dataclass(frozen=True, slots=True)
class PoolConfig:
    """One named pool, fully resolved (defaults, settings, environment)."""

    name: str
    database: str
    pool_class: str = "queue"
    pool_size: int = 5
    max_overflow: int = 10
    recycle: int = 1800
    timeout: float = 30.0
    pre_ping: bool = True
    use_lifo: bool = False
    echo: bool | str = False
    echo_pool: bool | str = False
    read_only: bool = False
    isolation_level: str | None = None
    # Kept out of the repr: it may carry credentials.
    connect_args: Mapping[str, Any] = field(
        default_factory=lambda: MappingProxyType({}), repr=False
    )
    #: Seconds a dead peer may cost a socket (PostgreSQL: keepalives, tcp_user_timeout).
    socket_timeout: float | None = 30.0
    #: PgBouncer's pool_mode in front of the database: "transaction", "session" or None.
    pgbouncer: str | None = None
    #: PgBouncer tracks prepared statements (1.21+ with max_prepared_statements).
    pgbouncer_prepared: bool = False

    @property
    def capacity(self) -> int:
        """The most connections this pool may hold open at once (size + overflow)."""
        return self.pool_size + self.max_overflow


@dataclass(frozen=True, slots=True)
class RetryConfig:
    max_retries: int = 3
    base_delay: float = 0.1
    max_delay: float = 30.0
    jitter: bool = True


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    enabled: bool = True
    failure_threshold: int = 5
    recovery_timeout: float = 60.0


@dataclass(frozen=True, slots=True)
class FleetConfig:
    cache: str = "default"
    interval: float = 10.0


@dataclass(frozen=True, slots=True)
class Config:
    """The whole ``MINGUS_SESSIONS`` setting, validated and merged over defaults."""

    pools: Mapping[str, PoolConfig]
    default_pool: str = "main"
    celery_pool: str = "main"
    monitoring: bool = True
    slow_query_threshold: float | None = 1.0
    log_query_parameters: bool = False
    leak_threshold: float | None = 30.0
    retry: RetryConfig = RetryConfig()
    circuit_breaker: BreakerConfig = BreakerConfig()
    fleet: FleetConfig = FleetConfig()
    metrics_token: str | None = None
    request_commit_hook: str | None = None

    def pool(self, name: str | None) -> PoolConfig:
        """The named pool (the default pool for ``None``); KeyError if unknown."""
        return self.pools[self.default_pool if name is None else name]


def key_path(*parts: str) -> str:
    """``MINGUS_SESSIONS["POOLS"]["main"]["POOL_SIZE"]`` for the given parts."""
    return SETTING + "".join(f'["{part}"]' for part in parts)


def env_name(pool: str, key: str) -> str:
    """The environment variable that overrides ``key`` of ``pool``."""
    base = _ENV_POOL_KEYS[key]
    if pool == _PRIMARY_POOL:
        return base
    return f"{re.sub(r'[^A-Za-z0-9]', '_', pool).upper()}_{base}"


class _Collector:
    """Accumulates problems while values are read; each reader returns a default on error."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def add(self, check_id: int, msg: str, hint: str) -> None:
        self.problems.append(Problem(f"mingus_sessions.E{check_id:03d}", msg, hint))

    # -- typed readers ----------------------------------------------------------------

    def integer(self, value: Any, where: str, *, minimum: int, default: int) -> int:
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

    def boolean(self, value: Any, where: str, *, allow_debug: bool = False) -> bool | str:
        if isinstance(value, bool):
            return value
        if allow_debug and value == "debug":
            return "debug"
        choices = 'True, False or "debug"' if allow_debug else "True or False"
        self.add(
            11, f"{where} must be {choices}, not {_show(value)}.", f"Set {where} to {choices}."
        )
        return False


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _parse_env_int(raw: str, var: str, out: _Collector, *, minimum: int) -> int | None:
    try:
        value = int(raw.strip())
    except ValueError:
        out.add(
            10,
            f"The environment variable {var}={raw!r} is not a whole number.",
            f"Set {var} to a whole number of at least {minimum}, or unset it.",
        )
        return None
    if value < minimum:
        out.add(
            10,
            f"The environment variable {var}={raw!r} is below the minimum of {minimum}.",
            f"Set {var} to {minimum} or more, or unset it.",
        )
        return None
    return value


def _parse_env_float(raw: str, var: str, out: _Collector) -> float | None:
    try:
        value = float(raw.strip())
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0 or value > MAX_SECONDS:
        out.add(
            10,
            f"The environment variable {var}={raw!r} is not a positive number of seconds "
            f"up to {MAX_SECONDS} (a day).",
            f"Set {var} to a positive number such as 30, or unset it.",
        )
        return None
    return value


def _parse_env_bool(raw: str, var: str, out: _Collector, *, allow_debug: bool) -> bool | str | None:
    text = raw.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    if allow_debug and text == "debug":
        return "debug"
    extra = ", debug" if allow_debug else ""
    out.add(
        10,
        f"The environment variable {var}={raw!r} is not a boolean.",
        f"Set {var} to one of true, false, 1, 0, yes, no, on, off{extra}, or unset it.",
    )
    return None


def _env_overrides(pool: str, environ: Mapping[str, str], out: _Collector) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key in _ENV_POOL_KEYS:
        var = env_name(pool, key)
        raw = environ.get(var)
        if raw is None:
            continue
        value: Any
        if key in ("POOL_SIZE", "MAX_OVERFLOW"):
            value = _parse_env_int(raw, var, out, minimum=0)
        elif key == "POOL_RECYCLE":
            value = _parse_env_int(raw, var, out, minimum=-1)
        elif key == "POOL_TIMEOUT":
            value = _parse_env_float(raw, var, out)
        else:
            value = _parse_env_bool(raw, var, out, allow_debug=True)
        if value is not None:
            found[key] = value
    return found


def _merge_section(raw: Mapping[str, Any], section: str, out: _Collector) -> dict[str, Any]:
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


def _import_pool_class(path: str) -> type | None:
    from sqlalchemy.pool import Pool

    module_name, _, attr = path.rpartition(".")
    if not module_name:
        return None
    try:
        found = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError):
        return None
    return found if isinstance(found, type) and issubclass(found, Pool) else None


def _parse_pool(
    name: str,
    given: Any,
    environ: Mapping[str, str],
    databases: Mapping[str, str],
    out: _Collector,
    database_settings: Mapping[str, Any] | None = None,
) -> PoolConfig | None:
    where = key_path("POOLS", name)
    if not isinstance(given, Mapping):
        out.add(
            3,
            f"{where} must be a dict of pool settings, not {_show(given)}.",
            f'Use a dict such as {{"DATABASE": "default", "POOL_SIZE": 5}} for {where}.',
        )
        return None
    unknown = sorted(set(given) - set(POOL_DEFAULTS), key=str)
    if unknown:
        out.add(
            4,
            f"{where} has unknown keys: {', '.join(map(str, unknown))}.",
            f"The pool keys are {', '.join(POOL_DEFAULTS)}; check the spelling.",
        )
    values = {**POOL_DEFAULTS, **{k: v for k, v in given.items() if k in POOL_DEFAULTS}}
    values.update(_env_overrides(name, environ, out))

    def at(key: str) -> str:
        return key_path("POOLS", name, key)

    database = values["DATABASE"]
    if not isinstance(database, str) or database not in databases:
        known = ", ".join(sorted(databases)) or "none"
        out.add(
            5,
            f"{at('DATABASE')} names {_show(database)}, which is not in DATABASES "
            f"(known: {known}).",
            f"Set {at('DATABASE')} to one of the aliases in DATABASES"
            + (f', or add "{database}" to DATABASES.' if isinstance(database, str) else "."),
        )
    elif databases[database] not in SUPPORTED_ENGINES:
        out.add(
            14,
            f'DATABASES["{database}"]["ENGINE"] is {databases[database]!r}: pool "{name}" '
            f"({at('DATABASE')}) cannot build a SQLAlchemy engine for it.",
            SUPPORTED_SUMMARY,
        )

    pgbouncer = _pgbouncer_mode(name, values, databases, out)
    if pgbouncer == "transaction" and "POOL_CLASS" not in given:
        # PgBouncer pools the server connections; a second pool in front of it
        # would only hold PgBouncer's client slots idle.
        values["POOL_CLASS"] = "null"

    pool_class = values["POOL_CLASS"]
    found_class = (
        _import_pool_class(pool_class)
        if isinstance(pool_class, str) and pool_class not in BUILTIN_POOL_CLASSES
        else None
    )
    if not isinstance(pool_class, str) or (
        pool_class not in BUILTIN_POOL_CLASSES and found_class is None
    ):
        out.add(
            6,
            f'{at("POOL_CLASS")} is {_show(pool_class)}, which is neither "queue", '
            '"null" nor the dotted path of a sqlalchemy.pool.Pool subclass.',
            f'Set {at("POOL_CLASS")} to "queue" (the default), "null" (for PgBouncer in '
            'transaction mode) or a path such as "sqlalchemy.pool.StaticPool".',
        )
        pool_class = "queue"
    elif getattr(found_class, "_is_asyncio", False):
        # create_engine would refuse it with an ArgumentError only when the
        # engine is first built, far from the setting.
        out.add(
            6,
            f"{at('POOL_CLASS')} is {_show(pool_class)}, an asyncio pool, which the pool's "
            "synchronous engine cannot use.",
            f'Set {at("POOL_CLASS")} to "queue" (the default), "null" or a synchronous pool '
            'class such as "sqlalchemy.pool.StaticPool".',
        )
        pool_class = "queue"

    isolation = values["ISOLATION_LEVEL"]
    if isolation is not None and (
        not isinstance(isolation, str) or isolation.upper() not in ISOLATION_LEVELS
    ):
        out.add(
            12,
            f"{at('ISOLATION_LEVEL')} is {_show(isolation)}, not an isolation level.",
            f"Set {at('ISOLATION_LEVEL')} to None or one of {', '.join(ISOLATION_LEVELS)}.",
        )
        isolation = None

    connect_args = values["CONNECT_ARGS"]
    if not isinstance(connect_args, Mapping):
        out.add(
            13,
            f"{at('CONNECT_ARGS')} must be a dict, not {_show(connect_args)}.",
            f"Set {at('CONNECT_ARGS')} to a dict of DB-API connect() keyword arguments.",
        )
        connect_args = {}

    recycle = values["POOL_RECYCLE"]
    pool = PoolConfig(
        name=name,
        database=database if isinstance(database, str) else "default",
        pool_class=pool_class,
        pool_size=out.integer(values["POOL_SIZE"], at("POOL_SIZE"), minimum=0, default=5),
        max_overflow=out.integer(values["MAX_OVERFLOW"], at("MAX_OVERFLOW"), minimum=0, default=10),
        recycle=-1
        if recycle is None
        else out.integer(recycle, at("POOL_RECYCLE"), minimum=-1, default=1800),
        timeout=out.number(values["POOL_TIMEOUT"], at("POOL_TIMEOUT"), default=30.0) or 30.0,
        pre_ping=bool(out.boolean(values["PRE_PING"], at("PRE_PING"))),
        use_lifo=bool(out.boolean(values["USE_LIFO"], at("USE_LIFO"))),
        echo=out.boolean(values["ECHO"], at("ECHO"), allow_debug=True),
        echo_pool=out.boolean(values["ECHO_POOL"], at("ECHO_POOL"), allow_debug=True),
        read_only=bool(out.boolean(values["READ_ONLY"], at("READ_ONLY"))),
        isolation_level=isolation.upper() if isinstance(isolation, str) else None,
        connect_args=MappingProxyType(dict(connect_args)),
        socket_timeout=_socket_timeout(values["SOCKET_TIMEOUT"], at("SOCKET_TIMEOUT"), out),
        pgbouncer=pgbouncer,
        pgbouncer_prepared=bool(
            out.boolean(values["PGBOUNCER_PREPARED"], at("PGBOUNCER_PREPARED"))
        ),
    )
    if pool.pgbouncer_prepared and pgbouncer != "transaction":
        out.add(
            17,
            f"{at('PGBOUNCER_PREPARED')} is True, but {at('PGBOUNCER')} is "
            f"{_show(pgbouncer)}: it only applies to PgBouncer in transaction mode.",
            f'Set {at("PGBOUNCER")} to "transaction" if the pool goes through PgBouncer in '
            f"transaction mode, or remove {at('PGBOUNCER_PREPARED')}.",
        )
    if pgbouncer == "transaction":
        entry = (database_settings or {}).get(pool.database)
        _check_transaction_pooling(pool, entry if isinstance(entry, Mapping) else None, out)
    return pool


def _socket_timeout(value: Any, where: str, out: _Collector) -> float | None:
    """``SOCKET_TIMEOUT``: None (off) or a number of seconds of at least the minimum."""
    seconds = out.number(value, where, allow_none=True, default=30.0)
    if seconds is not None and seconds < MIN_SOCKET_TIMEOUT:
        out.add(
            7,
            f"{where} is {value}, below the minimum of {MIN_SOCKET_TIMEOUT}.",
            f"Set {where} to {MIN_SOCKET_TIMEOUT} or more (seconds), or to None to leave dead "
            "connections to the operating system's TCP timeouts.",
        )
        return 30.0
    return seconds


def _pgbouncer_mode(
    name: str, values: Mapping[str, Any], databases: Mapping[str, str], out: _Collector
) -> str | None:
    """``PGBOUNCER``: None or PgBouncer's pool mode, on a PostgreSQL database only."""
    where = key_path("POOLS", name, "PGBOUNCER")
    mode = values["PGBOUNCER"]
    if mode is None:
        return None
    if mode not in PGBOUNCER_MODES:
        out.add(
            17,
            f"{where} is {_show(mode)}, not a PgBouncer pool mode this pool can use.",
            f'Set {where} to "transaction" or "session" (PgBouncer\'s pool_mode for this '
            "database), or to None when the pool connects to PostgreSQL directly.",
        )
        return None
    database = values["DATABASE"]
    engine = databases.get(database) if isinstance(database, str) else None
    vendor = SUPPORTED_ENGINES.get(engine) if engine is not None else None
    if vendor is not None and vendor != "postgresql":
        out.add(
            17,
            f'{where} is "{mode}", but the pool\'s database DATABASES["{database}"] is not '
            "PostgreSQL: PgBouncer only fronts PostgreSQL.",
            f"Remove {where}, or set {key_path('POOLS', name, 'DATABASE')} to a PostgreSQL "
            "database.",
        )
        return None
    return str(mode)


def _check_transaction_pooling(
    pool: PoolConfig, entry: Mapping[str, Any] | None, out: _Collector
) -> None:
    """Report the settings that break once PgBouncer hands each transaction another server.

    In transaction mode a client keeps a server connection for one
    transaction only, so anything that lives in the server session (a
    prepared statement, ``SET``, a role, a cursor ``WITH HOLD``) is lost, or
    worse, reaches another client.
    """

    def at(key: str) -> str:
        return key_path("POOLS", pool.name, key)

    mode = f'{at("PGBOUNCER")} is "transaction"'
    alias = f'DATABASES["{pool.database}"]'
    options = entry.get("OPTIONS") if entry is not None else None
    options = options if isinstance(options, Mapping) else {}

    def given(key: str) -> tuple[str, Any] | None:
        """Where the driver argument ``key`` is set (CONNECT_ARGS wins), and its value."""
        if key in pool.connect_args:
            return f'{at("CONNECT_ARGS")}["{key}"]', pool.connect_args[key]
        if key in options:
            return f'{alias}["OPTIONS"]["{key}"]', options[key]
        return None

    threshold = given("prepare_threshold")
    if threshold is not None and threshold[1] is not None and not pool.pgbouncer_prepared:
        out.add(
            18,
            f"{threshold[0]} is {_show(threshold[1])}, but {mode}: the driver's prepared "
            "statements live in one server session and fail on the next one PgBouncer hands "
            "out.",
            f"Remove {threshold[0]} (the pool turns prepared statements off), or set "
            f"{at('PGBOUNCER_PREPARED')} to True if PgBouncer (1.21 or later) tracks them "
            "(max_prepared_statements).",
        )
    startup = given("options")
    if startup is not None and startup[1]:
        out.add(
            18,
            f'{startup[0]} sends the startup parameter "options", but {mode}: PgBouncer '
            'refuses it ("unsupported startup parameter") or, with ignore_startup_parameters, '
            "drops it silently.",
            "Set those parameters on the server instead (ALTER ROLE ... SET, ALTER DATABASE "
            "... SET), or per transaction with SET LOCAL.",
        )
    if options.get("assume_role"):
        out.add(
            18,
            f'{alias}["OPTIONS"]["assume_role"] runs SET ROLE on each new connection, but '
            f"{mode}: the role would reach other clients' transactions, and be missing from "
            "this pool's.",
            f'Connect as that role ({alias}["USER"]), or set {at("PGBOUNCER")} to "session" '
            "if PgBouncer runs this database in session mode.",
        )
    if pool.read_only and pool.isolation_level == "AUTOCOMMIT":
        out.add(
            18,
            f'{at("READ_ONLY")} is True with {at("ISOLATION_LEVEL")} "AUTOCOMMIT", but {mode}: '
            "statements run outside any transaction, and a session-wide read-only setting "
            "would reach other clients.",
            f"Remove {at('ISOLATION_LEVEL')} from this pool, or connect with a role that "
            "may only read.",
        )
    if entry is not None and entry.get("DISABLE_SERVER_SIDE_CURSORS") is not True:
        out.add(
            19,
            f'{alias}["DISABLE_SERVER_SIDE_CURSORS"] is not True, but {mode} on that '
            "database: the Django ORM's server-side cursors (QuerySet.iterator()) are "
            "declared WITH HOLD and fail under transaction pooling.",
            f'Set {alias}["DISABLE_SERVER_SIDE_CURSORS"] = True, as Django\'s documentation '
            "asks for transaction pooling.",
        )


def parse_settings(
    raw: Any,
    *,
    environ: Mapping[str, str],
    databases: Mapping[str, str],
    caches: Collection[str] = ("default",),
    importable: Callable[[str], bool] | None = None,
    database_settings: Mapping[str, Any] | None = None,
) -> tuple[Config | None, list[Problem]]:
    """Validate ``MINGUS_SESSIONS`` and return ``(config, problems)``.

    ``raw`` is the user's setting (``None`` when absent), ``databases`` maps each
    ``DATABASES`` alias to its ``ENGINE``, ``caches`` lists the ``CACHES``
    aliases. ``database_settings``, the ``DATABASES`` entries themselves, lets the
    transaction-pooling checks read ``OPTIONS`` and ``DISABLE_SERVER_SIDE_CURSORS``.
    ``config`` is ``None`` whenever ``problems`` is not empty. The user's
    dict is never modified.
    """
    out = _Collector()
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        out.add(
            1,
            f"{SETTING} must be a dict, not {_show(raw)}.",
            f"Define {SETTING} as a dict, or remove it to use the defaults.",
        )
        return None, out.problems

    unknown = sorted(set(raw) - set(DEFAULTS), key=str)
    if unknown:
        out.add(
            2,
            f"{SETTING} has unknown keys: {', '.join(map(str, unknown))}.",
            f"The known keys are {', '.join(DEFAULTS)}; check the spelling.",
        )

    pools_given = raw.get("POOLS", DEFAULTS["POOLS"])
    pools: dict[str, PoolConfig] = {}
    if not isinstance(pools_given, Mapping) or not pools_given:
        out.add(
            3,
            f"{key_path('POOLS')} must be a non-empty dict of pools, not {_show(pools_given)}.",
            f"Define at least one pool, e.g. {key_path('POOLS')} = "
            '{"main": {"DATABASE": "default"}}.',
        )
        pools_given = {}
    for name, given in pools_given.items():
        if not isinstance(name, str) or not name:
            out.add(
                3,
                f"{key_path('POOLS')} has a pool named {_show(name)}; names must be "
                "non-empty strings.",
                'Rename the pool, e.g. "main" or "analytics".',
            )
            continue
        parsed = _parse_pool(name, given, environ, databases, out, database_settings)
        if parsed is not None:
            pools[name] = parsed

    known_pools = ", ".join(pools) or "none"
    default_pool = raw.get("DEFAULT_POOL", DEFAULTS["DEFAULT_POOL"])
    if pools_given and (not isinstance(default_pool, str) or default_pool not in pools_given):
        out.add(
            8,
            f"{key_path('DEFAULT_POOL')} names {_show(default_pool)}, which is not in "
            f"{key_path('POOLS')} (known: {known_pools}).",
            f"Set {key_path('DEFAULT_POOL')} to one of the pools, or add that pool.",
        )

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

    monitoring: Any = raw.get("MONITORING", DEFAULTS["MONITORING"])
    env_monitoring = environ.get(ENV_MONITORING)
    if env_monitoring is not None:
        parsed_env = _parse_env_bool(env_monitoring, ENV_MONITORING, out, allow_debug=False)
        monitoring = monitoring if parsed_env is None else parsed_env

    retry = _merge_section(raw, "RETRY", out)
    breaker = _merge_section(raw, "CIRCUIT_BREAKER", out)
    fleet = _merge_section(raw, "FLEET", out)

    retry_config = RetryConfig(
        max_retries=out.integer(
            retry["MAX_RETRIES"], key_path("RETRY", "MAX_RETRIES"), minimum=0, default=3
        ),
        base_delay=out.number(retry["BASE_DELAY"], key_path("RETRY", "BASE_DELAY"), default=0.1)
        or 0.1,
        max_delay=out.number(retry["MAX_DELAY"], key_path("RETRY", "MAX_DELAY"), default=30.0)
        or 30.0,
        jitter=bool(out.boolean(retry["JITTER"], key_path("RETRY", "JITTER"))),
    )
    if retry_config.max_delay < retry_config.base_delay:
        out.add(
            7,
            f"{key_path('RETRY', 'MAX_DELAY')} ({retry_config.max_delay}) is below "
            f"{key_path('RETRY', 'BASE_DELAY')} ({retry_config.base_delay}).",
            "The cap on the delay must be at least the first delay.",
        )

    fleet_cache = fleet["CACHE"]
    if not isinstance(fleet_cache, str) or fleet_cache not in caches:
        out.add(
            15,
            f"{key_path('FLEET', 'CACHE')} names {_show(fleet_cache)}, which is not in "
            f"CACHES (known: {', '.join(sorted(caches)) or 'none'}).",
            f"Set {key_path('FLEET', 'CACHE')} to a CACHES alias (a shared cache such as "
            "Redis lets every process see the fleet).",
        )
        fleet_cache = "default"

    token = raw.get("METRICS_TOKEN")
    if token is not None and (not isinstance(token, str) or not token):
        out.add(
            16,
            f"{key_path('METRICS_TOKEN')} must be a non-empty string or None.",
            f"Set {key_path('METRICS_TOKEN')} to a long random string, or None.",
        )
        token = None
    elif token is not None and not _VISIBLE_ASCII.fullmatch(token):
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
        token = None
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
        hook = None

    config = Config(
        pools=MappingProxyType(pools),
        default_pool=default_pool if isinstance(default_pool, str) else "main",
        celery_pool=celery_pool if isinstance(celery_pool, str) else "main",
        monitoring=bool(out.boolean(monitoring, key_path("MONITORING"))),
        slow_query_threshold=out.number(
            raw.get("SLOW_QUERY_THRESHOLD", DEFAULTS["SLOW_QUERY_THRESHOLD"]),
            key_path("SLOW_QUERY_THRESHOLD"),
            allow_none=True,
            default=1.0,
        ),
        log_query_parameters=bool(
            out.boolean(raw.get("LOG_QUERY_PARAMETERS", False), key_path("LOG_QUERY_PARAMETERS"))
        ),
        leak_threshold=out.number(
            raw.get("LEAK_THRESHOLD", DEFAULTS["LEAK_THRESHOLD"]),
            key_path("LEAK_THRESHOLD"),
            allow_none=True,
            default=30.0,
        ),
        retry=retry_config,
        circuit_breaker=BreakerConfig(
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
        ),
        fleet=FleetConfig(
            cache=fleet_cache,
            interval=out.number(fleet["INTERVAL"], key_path("FLEET", "INTERVAL"), default=10.0)
            or 10.0,
        ),
        metrics_token=token,
        request_commit_hook=hook,
    )
    if out.problems:
        return None, out.problems
    return config, []
