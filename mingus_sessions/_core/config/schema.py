"""The settings schema: the defaults, the supported backends and the frozen result.

:func:`~mingus_sessions._core.config.parse_settings` fills these dataclasses;
everything else in the package reads them. The constants here are the limits
the parsers hold the settings to.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

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
        "CIRCUIT_BREAKER": {
            "ENABLED": True,
            "FAILURE_THRESHOLD": 5,
            "RECOVERY_TIMEOUT": 60.0,
            "SHARED": False,
        },
        "FLEET": {"CACHE": "default", "INTERVAL": 10.0},
        "METRICS_TOKEN": None,
        "REQUEST_COMMIT_HOOK": None,
        "OPENTELEMETRY": {"METRICS": True, "TRACES": True},
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
        "MAX_WAITING": 0,
        "PRE_PING": True,
        "PING_IDLE": 1.0,
        "USE_LIFO": False,
        "ECHO": False,
        "ECHO_POOL": False,
        "READ_ONLY": False,
        "ISOLATION_LEVEL": None,
        "CONNECT_ARGS": {},
        "SOCKET_TIMEOUT": 30,
        "PGBOUNCER": None,
        "PGBOUNCER_PREPARED": False,
        "REPLICAS": [],
        "MAX_REPLICA_LAG": 5,
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

#: The longest duration any setting may give, in seconds (a day). Far beyond
#: any sensible timeout or delay, and far below the limits of the clocks and
#: waits that use them (``threading.TIMEOUT_MAX``, ``time_t``), which would
#: otherwise raise OverflowError in the middle of a checkout or a retry.
MAX_SECONDS = 86400


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
    #: Callers that may queue for a connection at once; past them a checkout fails
    #: at once (0: no limit).
    max_waiting: int = 0
    #: True: check liveness at checkout without a round trip when used within
    #: ``ping_idle`` seconds, else ping; "always": ping every checkout; False: never.
    pre_ping: bool | str = True
    ping_idle: float = 1.0
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
    #: The pools of this pool's read replicas (``replica_pool_name(name, alias)``
    #: for each alias of ``REPLICAS``), which read-only scopes are routed to.
    replicas: tuple[str, ...] = ()
    #: Seconds a replica may lag behind before reads skip it.
    max_replica_lag: float = 5.0
    #: For a replica's pool: the pool whose replica it is (None for any other pool).
    replica_of: str | None = None

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
    #: One breaker state for the whole fleet, through the FLEET cache.
    shared: bool = False


@dataclass(frozen=True, slots=True)
class FleetConfig:
    cache: str = "default"
    interval: float = 10.0


@dataclass(frozen=True, slots=True)
class OtelConfig:
    """What is emitted through OpenTelemetry's API, when it is installed."""

    #: The pool metrics and ``db.client.operation.duration``.
    metrics: bool = True
    #: A span per scope, with the statements as child spans.
    traces: bool = True


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
    opentelemetry: OtelConfig = OtelConfig()

    def pool(self, name: str | None) -> PoolConfig:
        """The named pool (the default pool for ``None``); KeyError if unknown."""
        return self.pools[self.default_pool if name is None else name]


def replica_pool_name(pool: str, alias: str) -> str:
    """The name of the pool that serves ``pool``'s reads on the replica ``alias``."""
    return f"{pool}@{alias}"


def key_path(*parts: str) -> str:
    """``MINGUS_SESSIONS["POOLS"]["main"]["POOL_SIZE"]`` for the given parts."""
    return SETTING + "".join(f'["{part}"]' for part in parts)
