"""Engine construction as plain Python: ``build_engine_spec`` from a DATABASES entry and a pool."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.pool import NullPool, QueuePool, StaticPool

from mingus_sessions._core.config import PoolConfig
from mingus_sessions._core.engine_args import (
    DEFAULT_CONNECT_TIMEOUT,
    EngineSpec,
    build_engine_spec,
    postgresql_driver,
)
from mingus_sessions._core.errors import ConfigurationError
from mingus_sessions._core.pools import WaitAwareQueuePool

PASSWORD = "p@ss/w:rd#?%&="

PG: dict[str, Any] = {
    "ENGINE": "django.db.backends.postgresql",
    "NAME": "app",
    "USER": "app_user",
    "PASSWORD": PASSWORD,
    "HOST": "db.internal",
    "PORT": "5432",
    "OPTIONS": {},
}
MYSQL: dict[str, Any] = {
    "ENGINE": "django.db.backends.mysql",
    "NAME": "app",
    "USER": "app_user",
    "PASSWORD": PASSWORD,
    "HOST": "db.internal",
    "PORT": "3306",
    "OPTIONS": {},
}
ORACLE: dict[str, Any] = {
    "ENGINE": "django.db.backends.oracle",
    "NAME": "ORCLPDB1",
    "USER": "app_user",
    "PASSWORD": PASSWORD,
    "HOST": "db.internal",
    "PORT": "1521",
    "OPTIONS": {},
}
SQLITE: dict[str, Any] = {"ENGINE": "django.db.backends.sqlite3", "NAME": "/srv/app/db.sqlite3"}

QUEUE_KEYS = {"pool_size", "max_overflow", "pool_timeout", "pool_recycle", "pool_use_lifo"}


def pool(name: str = "main", **values: Any) -> PoolConfig:
    return PoolConfig(name=name, database="default", **values)


def db(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**copy.deepcopy(base), **changes}


def spec_for(
    settings_dict: dict[str, Any], pool_config: PoolConfig | None = None, **kwargs: Any
) -> EngineSpec:
    kwargs.setdefault("pg_driver", "psycopg")
    return build_engine_spec(settings_dict, pool_config or pool(), **kwargs)


# -- PostgreSQL ------------------------------------------------------------------------


@pytest.mark.parametrize("driver", ["psycopg", "psycopg2"])
def test_postgresql_url(driver: str) -> None:
    """The URL has the driver Django uses and every part of the DATABASES entry."""
    spec = spec_for(PG, pg_driver=driver)
    url = spec.url
    assert url.drivername == f"postgresql+{driver}"
    assert spec.backend == f"postgresql+{driver}"
    assert spec.vendor == "postgresql"
    assert (url.username, url.host, url.port, url.database) == (
        "app_user",
        "db.internal",
        5432,
        "app",
    )
    assert url.password == PASSWORD


def test_postgresql_driver_is_psycopg3_when_installed() -> None:
    """Without pg_driver the spec uses psycopg 3 when it is importable, like Django."""
    pytest.importorskip("psycopg")
    assert postgresql_driver() == "psycopg"
    assert build_engine_spec(PG, pool()).url.drivername == "postgresql+psycopg"


@pytest.mark.parametrize("base", [PG, MYSQL, ORACLE], ids=["postgresql", "mysql", "oracle"])
def test_password_is_kept_but_never_shown(base: dict[str, Any]) -> None:
    """URL.create keeps a password with @ / : # intact, and no repr or str shows it."""
    spec = spec_for(base)
    assert spec.url.password == PASSWORD
    for shown in (str(spec.url), repr(spec.url), repr(spec), str(spec.kwargs)):
        assert PASSWORD not in shown
        assert "p@ss" not in shown
    # The escaped rendering round-trips, so no manual quoting was needed.
    rendered = spec.url.render_as_string(hide_password=False)
    assert make_url(rendered).password == PASSWORD


@pytest.mark.parametrize(
    ("port", "expected"), [("5432", 5432), (6543, 6543), ("", None), (None, None)]
)
def test_port_becomes_an_int(port: Any, expected: int | None) -> None:
    """A PORT string becomes an int; an empty PORT means the driver's default."""
    assert spec_for(db(PG, PORT=port)).url.port == expected


@pytest.mark.parametrize("base", [PG, MYSQL, ORACLE], ids=["postgresql", "mysql", "oracle"])
def test_bad_port_names_the_key(base: dict[str, Any]) -> None:
    """A PORT that is not a number is a ConfigurationError naming DATABASES[alias]["PORT"]."""
    with pytest.raises(ConfigurationError) as info:
        spec_for(db(base, PORT="fifty"), pool("reports"))
    assert str(info.value) == 'DATABASES["default"]["PORT"] is \'fifty\', not a port number.'
    assert info.value.pool == "reports"
    assert isinstance(info.value, ImproperlyConfigured)


#: What the default SOCKET_TIMEOUT (30 s) sets: libpq's keepalives and TCP user timeout.
SOCKET_30 = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 3,
    "keepalives_count": 4,
    "tcp_user_timeout": 13500,
    "connect_timeout": 10,
}


def test_postgresql_defaults_in_connect_args() -> None:
    """connect_timeout defaults to 10 s, SOCKET_TIMEOUT 30 sets keepalives, and
    application_name names the pool."""
    spec = spec_for(PG, pool("celery"))
    assert spec.kwargs["connect_args"] == {
        **SOCKET_30,
        "application_name": "mingus_sessions:celery",
    }
    assert DEFAULT_CONNECT_TIMEOUT == 10


def test_postgresql_without_socket_timeout() -> None:
    """SOCKET_TIMEOUT None leaves keepalives to the system; the connect timeout stays 10 s."""
    spec = spec_for(PG, pool("celery", socket_timeout=None))
    assert spec.kwargs["connect_args"] == {
        "connect_timeout": DEFAULT_CONNECT_TIMEOUT,
        "application_name": "mingus_sessions:celery",
    }


def test_socket_timeout_of_five_seconds() -> None:
    """The smallest SOCKET_TIMEOUT (5 s) maps onto libpq's smallest useful values."""
    args = spec_for(PG, pool(socket_timeout=5.0)).kwargs["connect_args"]
    assert {key: args[key] for key in SOCKET_30} == {
        "keepalives": 1,
        "keepalives_idle": 1,
        "keepalives_interval": 1,
        "keepalives_count": 3,
        "tcp_user_timeout": 1500,
        "connect_timeout": 2,
    }


@pytest.mark.parametrize("seconds", [5, 5.5, 7, 10, 12.5, 30, 45, 60, 300, 3600])
def test_socket_timeout_bounds_every_way_a_peer_is_lost(seconds: float) -> None:
    """Whatever SOCKET_TIMEOUT, a pre-ping then a reconnect, a statement waiting for its
    answer (the first keepalive probe past the user timeout) and keepalives counted the
    portable way all end within it, and a connect within 10 s."""
    args = spec_for(PG, pool(socket_timeout=float(seconds))).kwargs["connect_args"]
    user_timeout = args["tcp_user_timeout"] / 1000
    idle, interval = args["keepalives_idle"], args["keepalives_interval"]
    assert all(isinstance(args[key], int) and args[key] >= 1 for key in SOCKET_30)
    assert 2 <= args["connect_timeout"] <= DEFAULT_CONNECT_TIMEOUT
    assert user_timeout + 0.5 + args["connect_timeout"] <= 0.8 * seconds
    # Linux drops a waiting connection at the first probe timer past the user timeout
    # with a probe out: by then at most one interval has passed beyond either.
    assert max(idle, user_timeout) + interval <= 0.9 * seconds
    assert idle + args["keepalives_count"] * interval <= 0.8 * seconds


def test_projects_keepalive_settings_win_key_by_key() -> None:
    """Keepalive parameters and connect_timeout from OPTIONS or CONNECT_ARGS win over the
    ones SOCKET_TIMEOUT sets; the others are still set."""
    spec = spec_for(
        db(PG, OPTIONS={"keepalives_idle": 60, "connect_timeout": 4}),
        pool(connect_args={"tcp_user_timeout": 0}),
    )
    args = spec.kwargs["connect_args"]
    assert (args["keepalives_idle"], args["tcp_user_timeout"], args["connect_timeout"]) == (
        60,
        0,
        4,
    )
    assert (args["keepalives"], args["keepalives_interval"]) == (1, 3)


def test_postgresql_options_keep_their_values() -> None:
    """connect_timeout and application_name from OPTIONS win over the defaults."""
    spec = spec_for(
        db(PG, OPTIONS={"connect_timeout": 3, "application_name": "web"}),
        pool(socket_timeout=None),
    )
    assert spec.kwargs["connect_args"] == {"connect_timeout": 3, "application_name": "web"}


def test_connect_args_setting_wins_over_options() -> None:
    """The pool's CONNECT_ARGS override Django's OPTIONS key by key."""
    spec = spec_for(
        db(PG, OPTIONS={"connect_timeout": 3, "sslmode": "prefer"}),
        pool(connect_args={"connect_timeout": 1}),
    )
    assert spec.kwargs["connect_args"]["connect_timeout"] == 1
    assert spec.kwargs["connect_args"]["sslmode"] == "prefer"


def test_libpq_options_pass_through() -> None:
    """libpq parameters in OPTIONS reach connect() unchanged."""
    options = {
        "sslmode": "verify-full",
        "sslrootcert": "/etc/ssl/root.crt",
        "options": "-c search_path=app",
        "target_session_attrs": "read-write",
    }
    spec = spec_for(db(PG, OPTIONS=options))
    assert spec.kwargs["connect_args"] == {
        **options,
        **SOCKET_30,
        "application_name": "mingus_sessions:main",
    }


def test_settings_dict_is_not_modified() -> None:
    """Django's live settings_dict (and its OPTIONS) come out as they went in."""
    settings_dict = db(
        PG,
        OPTIONS={"isolation_level": 4, "assume_role": "r", "pool": True, "options": "-c a=b"},
    )
    before = copy.deepcopy(settings_dict)
    spec_for(settings_dict, pool(read_only=True))
    assert settings_dict == before


@pytest.mark.parametrize(
    ("driver", "value", "expected"),
    [
        ("psycopg", 1, "READ UNCOMMITTED"),
        ("psycopg", 2, "READ COMMITTED"),
        ("psycopg", 3, "REPEATABLE READ"),
        ("psycopg", 4, "SERIALIZABLE"),
        ("psycopg2", 0, "AUTOCOMMIT"),
        ("psycopg2", 1, "READ COMMITTED"),
        ("psycopg2", 2, "REPEATABLE READ"),
        ("psycopg2", 3, "SERIALIZABLE"),
        ("psycopg2", 4, "READ UNCOMMITTED"),
        ("psycopg", "read committed", "READ COMMITTED"),
    ],
)
def test_isolation_level_option_is_translated(driver: str, value: Any, expected: str) -> None:
    """Django's OPTIONS["isolation_level"] (each driver's own numbers) becomes isolation_level."""
    spec = spec_for(db(PG, OPTIONS={"isolation_level": value}), pg_driver=driver)
    assert spec.kwargs["isolation_level"] == expected
    assert "isolation_level" not in spec.kwargs["connect_args"]


@pytest.mark.parametrize(
    ("member", "expected"),
    [
        ("READ_UNCOMMITTED", "READ UNCOMMITTED"),
        ("READ_COMMITTED", "READ COMMITTED"),
        ("REPEATABLE_READ", "REPEATABLE READ"),
        ("SERIALIZABLE", "SERIALIZABLE"),
    ],
)
def test_psycopg_isolation_level_enum(member: str, expected: str) -> None:
    """psycopg 3's IsolationLevel enum, as Django's docs recommend, is translated by name."""
    psycopg = pytest.importorskip("psycopg")
    level = getattr(psycopg.IsolationLevel, member)
    spec = spec_for(db(PG, OPTIONS={"isolation_level": level}))
    assert spec.kwargs["isolation_level"] == expected


def test_isolation_level_setting_wins_over_options() -> None:
    """The pool's ISOLATION_LEVEL is used before Django's OPTIONS value."""
    spec = spec_for(db(PG, OPTIONS={"isolation_level": 4}), pool(isolation_level="READ COMMITTED"))
    assert spec.kwargs["isolation_level"] == "READ COMMITTED"


def test_no_isolation_level_by_default() -> None:
    """Without a level anywhere the driver's default is left alone."""
    assert "isolation_level" not in spec_for(PG).kwargs


@pytest.mark.parametrize(
    ("role", "statement"),
    [("reporting", 'SET ROLE "reporting"'), ('we"ird', 'SET ROLE "we""ird"')],
)
def test_assume_role_runs_on_connect(role: str, statement: str) -> None:
    """OPTIONS["assume_role"] becomes a quoted SET ROLE on each new connection."""
    spec = spec_for(db(PG, OPTIONS={"assume_role": role}))
    assert spec.on_connect == (statement,)
    assert "assume_role" not in spec.kwargs["connect_args"]


@pytest.mark.parametrize(("settings_dict", "kept"), [(PG, True), (MYSQL, False), (SQLITE, False)])
def test_the_time_zone_is_kept_for_postgresql_only(
    settings_dict: dict[str, Any], kept: bool
) -> None:
    """The time zone Django's connection runs in is set on PostgreSQL's connections only.

    It is never passed as the libpq ``options`` startup parameter, which
    connection poolers such as PgBouncer refuse.
    """
    spec = spec_for(settings_dict, time_zone="Asia/Kolkata")
    assert spec.time_zone == ("Asia/Kolkata" if kept else None)
    assert "options" not in spec.kwargs["connect_args"]
    assert spec_for(settings_dict).time_zone is None


def test_django_only_postgresql_options_are_dropped() -> None:
    """Django's own pool and server_side_binding never reach connect()."""
    spec = spec_for(db(PG, OPTIONS={"pool": {"min_size": 2}, "server_side_binding": True}))
    assert spec.kwargs["connect_args"] == {
        **SOCKET_30,
        "application_name": "mingus_sessions:main",
    }
    assert spec.on_connect == ()


def test_postgresql_read_only() -> None:
    """READ_ONLY: the driver begins every transaction READ ONLY, and nothing is sent that a
    pooler could refuse or drop (no libpq startup options), so it works through any pooler."""
    spec = spec_for(PG, pool(read_only=True))
    assert "options" not in spec.kwargs["connect_args"]
    assert spec.driver_read_only is True
    assert spec.on_connect == ()


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, "-c default_transaction_read_only=on"),
        (
            {"options": "-c search_path=app"},
            "-c search_path=app -c default_transaction_read_only=on",
        ),
    ],
)
def test_postgresql_read_only_autocommit(options: dict[str, str], expected: str) -> None:
    """READ_ONLY in AUTOCOMMIT straight to PostgreSQL, where no transaction begins READ ONLY:
    libpq's options (merged with any) make the session itself read-only."""
    spec = spec_for(db(PG, OPTIONS=options), pool(read_only=True, isolation_level="AUTOCOMMIT"))
    assert spec.kwargs["connect_args"]["options"] == expected
    assert spec.driver_read_only is True
    assert spec.on_connect == ()


def test_postgresql_read_only_behind_pgbouncer_in_session_mode() -> None:
    """PgBouncer refuses the options startup parameter; in session mode the server session is
    the pool's own, so READ_ONLY sets it read-only with a SET on connect instead."""
    spec = spec_for(PG, pool(read_only=True, pgbouncer="session"))
    assert "options" not in spec.kwargs["connect_args"]
    assert spec.on_connect == ("SET default_transaction_read_only = on",)
    assert spec.driver_read_only is True


def test_postgresql_read_only_behind_pgbouncer_in_transaction_mode() -> None:
    """In transaction mode nothing session-wide may be set (it would reach other clients):
    READ_ONLY is the driver's BEGIN READ ONLY alone."""
    spec = spec_for(PG, pool(read_only=True, pgbouncer="transaction"))
    assert "options" not in spec.kwargs["connect_args"]
    assert spec.on_connect == ()
    assert spec.driver_read_only is True


@pytest.mark.parametrize("pgbouncer", [None, "session", "transaction"])
def test_postgresql_write_pools_are_not_read_only(pgbouncer: str | None) -> None:
    """Without READ_ONLY, no read-only flag, option or statement is set."""
    spec = spec_for(PG, pool(pgbouncer=pgbouncer))
    assert spec.driver_read_only is False
    assert "options" not in spec.kwargs["connect_args"]
    assert spec.on_connect == ()


def test_read_only_is_left_to_sqlite_and_mysql_as_before() -> None:
    """The driver flag is PostgreSQL's: SQLite and MySQL keep their session statements."""
    assert build_engine_spec(SQLITE, pool(read_only=True)).driver_read_only is False
    assert build_engine_spec(MYSQL, pool(read_only=True)).driver_read_only is False


@pytest.mark.parametrize(
    ("driver", "values", "expected"),
    [
        ("psycopg", {"pgbouncer": "transaction"}, None),
        ("psycopg", {"pgbouncer": "transaction", "pgbouncer_prepared": True}, "unset"),
        ("psycopg", {"pgbouncer": "session"}, "unset"),
        ("psycopg", {}, "unset"),
        ("psycopg2", {"pgbouncer": "transaction"}, "unset"),
        (
            "psycopg",
            {
                "pgbouncer": "transaction",
                "pgbouncer_prepared": True,
                "connect_args": {"prepare_threshold": 3},
            },
            3,
        ),
    ],
    ids=["transaction", "prepared", "session", "direct", "psycopg2", "project-threshold"],
)
def test_prepared_statements_behind_pgbouncer(
    driver: str, values: dict[str, Any], expected: Any
) -> None:
    """PGBOUNCER "transaction" turns psycopg 3's prepared statements off (prepare_threshold
    None) unless PGBOUNCER_PREPARED; psycopg2 never prepares, so it gets no such argument."""
    spec = spec_for(PG, pool(**values), pg_driver=driver)
    assert spec.kwargs["connect_args"].get("prepare_threshold", "unset") == expected


def test_read_only_survives_connect_args_options() -> None:
    """READ_ONLY in AUTOCOMMIT still holds when CONNECT_ARGS set libpq options of their own."""
    spec = spec_for(
        PG,
        pool(
            read_only=True,
            isolation_level="AUTOCOMMIT",
            connect_args={"options": "-c statement_timeout=5000"},
        ),
    )
    assert "default_transaction_read_only=on" in spec.kwargs["connect_args"]["options"]


# -- pool arguments --------------------------------------------------------------------


def test_queue_pool_arguments() -> None:
    """Each pool setting maps onto its create_engine argument; logging names are the pool's."""
    config = pool(
        "celery",
        pool_size=7,
        max_overflow=3,
        timeout=12.5,
        recycle=600,
        use_lifo=True,
        pre_ping=False,
        echo="debug",
        echo_pool=True,
    )
    kwargs = spec_for(PG, config).kwargs
    assert kwargs["poolclass"] is WaitAwareQueuePool
    assert issubclass(kwargs["poolclass"], QueuePool)
    assert {k: kwargs[k] for k in QUEUE_KEYS} == {
        "pool_size": 7,
        "max_overflow": 3,
        "pool_timeout": 12.5,
        "pool_recycle": 600,
        "pool_use_lifo": True,
    }
    assert kwargs["pool_pre_ping"] is False
    assert kwargs["pool_logging_name"] == "celery"
    assert kwargs["logging_name"] == "celery"
    assert kwargs["echo"] == "debug"
    assert kwargs["echo_pool"] is True


@pytest.mark.parametrize("pre_ping", [True, "always", False])
def test_the_queue_pool_checks_liveness_itself(pre_ping: bool | str) -> None:
    """SQLAlchemy's pre-ping is off on the queue pool: PRE_PING goes to its own checks."""
    kwargs = spec_for(PG, pool(pre_ping=pre_ping, ping_idle=2.5, max_waiting=7)).kwargs
    assert kwargs["pool_pre_ping"] is False
    assert kwargs["max_waiting"] == 7
    checks = kwargs["checkout_checks"]
    assert (checks.pre_ping, checks.ping_idle) == (pre_ping, 2.5)
    assert callable(checks.alive)


@pytest.mark.parametrize(("settings_dict", "driver"), [(SQLITE, None), (PG, "psycopg2")])
def test_drivers_without_a_liveness_check_ping(settings_dict: dict[str, Any], driver: Any) -> None:
    """SQLite, psycopg2 (and MySQL) have no check without a round trip: the pool pings."""
    spec = build_engine_spec(settings_dict, pool(), pg_driver=driver)
    checks = spec.kwargs["checkout_checks"]
    assert checks.pre_ping is True
    assert checks.alive is None


@pytest.mark.parametrize(("pre_ping", "expected"), [(True, True), ("always", True), (False, False)])
def test_other_pools_keep_sqlalchemys_pre_ping(pre_ping: bool | str, expected: bool) -> None:
    """A pool of another class pings with SQLAlchemy's pool_pre_ping, and gets no checks."""
    kwargs = spec_for(PG, pool(pool_class="null", pre_ping=pre_ping)).kwargs
    assert kwargs["pool_pre_ping"] is expected
    assert "checkout_checks" not in kwargs
    assert "max_waiting" not in kwargs


@pytest.mark.parametrize(("log_parameters", "hidden"), [(False, True), (True, False)])
def test_hide_parameters_unless_logging_them(log_parameters: bool, hidden: bool) -> None:
    """Bound parameters stay out of SQLAlchemy's logs and errors unless LOG_QUERY_PARAMETERS."""
    kwargs = spec_for(PG, log_parameters=log_parameters).kwargs
    assert kwargs["hide_parameters"] is hidden


def test_null_pool_has_no_size_arguments() -> None:
    """POOL_CLASS "null" (PgBouncer) gives NullPool and none of the queue's arguments."""
    kwargs = spec_for(PG, pool(pool_class="null")).kwargs
    assert kwargs["poolclass"] is NullPool
    assert not QUEUE_KEYS & set(kwargs)


def test_dotted_pool_class() -> None:
    """A dotted POOL_CLASS is imported; a non-queue pool gets only pool_recycle."""
    kwargs = spec_for(PG, pool(pool_class="sqlalchemy.pool.StaticPool", recycle=60)).kwargs
    assert kwargs["poolclass"] is StaticPool
    assert QUEUE_KEYS & set(kwargs) == {"pool_recycle"}
    assert kwargs["pool_recycle"] == 60


@pytest.mark.parametrize(
    "config",
    [pool(), pool(pool_class="null"), pool(pool_class="sqlalchemy.pool.StaticPool")],
    ids=["queue", "null", "static"],
)
def test_create_engine_accepts_the_spec(config: PoolConfig) -> None:
    """create_engine takes every spec's arguments as they are (no connection is opened)."""
    spec = build_engine_spec(SQLITE, config)
    engine = create_engine(spec.url, **spec.kwargs)
    try:
        assert isinstance(engine.pool, spec.kwargs["poolclass"])
        assert engine.pool.logging_name == config.name
    finally:
        engine.dispose()


def test_create_engine_accepts_the_postgresql_spec() -> None:
    """The psycopg spec is accepted by create_engine as it is (no connection is opened)."""
    pytest.importorskip("psycopg")
    spec = spec_for(db(PG, OPTIONS={"isolation_level": 4}), pool(read_only=True))
    engine = create_engine(spec.url, **spec.kwargs)
    try:
        assert engine.dialect.driver == "psycopg"
        assert PASSWORD not in repr(engine)
    finally:
        engine.dispose()


# -- SQLite ----------------------------------------------------------------------------


def test_sqlite_file() -> None:
    """A file database: the path as is, a queue pool, foreign keys on as in Django, plain BEGIN."""
    spec = build_engine_spec(SQLITE, pool())
    assert spec.url.drivername == "sqlite+pysqlite"
    assert spec.backend == "sqlite+pysqlite"
    assert spec.url.database == "/srv/app/db.sqlite3"
    assert spec.kwargs["poolclass"] is WaitAwareQueuePool
    assert spec.kwargs["connect_args"] == {"check_same_thread": False}
    assert spec.on_connect == ("PRAGMA foreign_keys = ON",)
    assert spec.sqlite_begin == "BEGIN"


def test_sqlite_pathlib_name() -> None:
    """NAME may be a pathlib.Path, as in Django's startproject settings."""
    spec = build_engine_spec(db(SQLITE, NAME=Path("/srv/app") / "db.sqlite3"), pool())
    assert spec.url.database == "/srv/app/db.sqlite3"


@pytest.mark.parametrize("name", [":memory:", "", None])
@pytest.mark.parametrize("pool_class", ["queue", "null"])
def test_sqlite_memory_is_one_static_connection(name: str | None, pool_class: str) -> None:
    """A plain in-memory database is private to the pool: one shared connection (StaticPool)."""
    spec = build_engine_spec(db(SQLITE, NAME=name), pool(pool_class=pool_class))
    assert spec.url.database == ":memory:"
    assert spec.kwargs["poolclass"] is StaticPool
    assert spec.kwargs["connect_args"]["check_same_thread"] is False


def test_sqlite_memory_is_never_recycled() -> None:
    """The single in-memory connection is never recycled, which would lose the database."""
    spec = build_engine_spec(db(SQLITE, NAME=":memory:"), pool(recycle=1800))
    assert spec.kwargs.get("pool_recycle", -1) == -1


def test_sqlite_shared_cache_test_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Django's in-memory test database name is opened as a URI and shared between connections."""
    monkeypatch.chdir(tmp_path)
    name = "file:memorydb_default?mode=memory&cache=shared"
    spec = build_engine_spec(db(SQLITE, NAME=name), pool())
    assert spec.url.database == "file:memorydb_default"
    assert dict(spec.url.query) == {"mode": "memory", "cache": "shared", "uri": "true"}
    assert spec.kwargs["poolclass"] is WaitAwareQueuePool

    engine = create_engine(spec.url, **spec.kwargs)
    try:
        with engine.connect() as first:
            first.execute(text("CREATE TABLE shared_probe (x INTEGER)"))
            first.execute(text("INSERT INTO shared_probe VALUES (1)"))
            first.commit()
            with engine.connect() as second:
                assert second.execute(text("SELECT x FROM shared_probe")).scalar() == 1
    finally:
        engine.dispose()
    # Opened as a URI: no file called "file:memorydb_default" was created.
    assert list(tmp_path.iterdir()) == []


def test_sqlite_init_command_runs_on_connect() -> None:
    """init_command is split into statements run on each new connection, not passed to connect()."""
    options = {"init_command": "PRAGMA busy_timeout = 5000; PRAGMA cache_size = -20000;"}
    spec = build_engine_spec(db(SQLITE, OPTIONS=options), pool())
    assert spec.on_connect == (
        "PRAGMA foreign_keys = ON",
        "PRAGMA busy_timeout = 5000",
        "PRAGMA cache_size = -20000",
    )
    assert spec.kwargs["connect_args"] == {"check_same_thread": False}


@pytest.mark.parametrize(
    ("mode", "begin"),
    [
        ("IMMEDIATE", "BEGIN IMMEDIATE"),
        ("immediate", "BEGIN IMMEDIATE"),
        ("EXCLUSIVE", "BEGIN EXCLUSIVE"),
        ("DEFERRED", "BEGIN DEFERRED"),
        (None, "BEGIN"),
    ],
)
def test_sqlite_transaction_mode(mode: str | None, begin: str) -> None:
    """transaction_mode chooses the BEGIN that SQLAlchemy emits."""
    spec = build_engine_spec(db(SQLITE, OPTIONS={"transaction_mode": mode}), pool())
    assert spec.sqlite_begin == begin
    assert "transaction_mode" not in spec.kwargs["connect_args"]


def test_sqlite_detect_types_dropped_timeout_kept() -> None:
    """detect_types (Django's type parsing) is dropped; sqlite3's own timeout is passed."""
    options = {"detect_types": 3, "timeout": 20}
    spec = build_engine_spec(db(SQLITE, OPTIONS=options), pool())
    assert spec.kwargs["connect_args"] == {"timeout": 20, "check_same_thread": False}


def test_sqlite_read_only() -> None:
    """READ_ONLY adds PRAGMA query_only last, and a plain BEGIN (IMMEDIATE would need a write)."""
    options = {"init_command": "PRAGMA busy_timeout = 5000", "transaction_mode": "IMMEDIATE"}
    spec = build_engine_spec(db(SQLITE, OPTIONS=options), pool(read_only=True))
    assert spec.on_connect == (
        "PRAGMA foreign_keys = ON",
        "PRAGMA busy_timeout = 5000",
        "PRAGMA query_only = ON",
    )
    assert spec.sqlite_begin == "BEGIN"


# -- MySQL -----------------------------------------------------------------------------


def test_mysql_url_and_defaults() -> None:
    """mysqlclient's URL, utf8mb4 and a connect timeout by default."""
    spec = build_engine_spec(MYSQL, pool())
    url = spec.url
    assert url.drivername == "mysql+mysqldb"
    assert spec.backend == "mysql+mysqldb"
    assert (url.username, url.host, url.port, url.database) == (
        "app_user",
        "db.internal",
        3306,
        "app",
    )
    assert spec.kwargs["connect_args"] == {"charset": "utf8mb4", "connect_timeout": 10}
    assert spec.on_connect == ()
    assert spec.sqlite_begin is None


def test_mysql_options_pass_through() -> None:
    """mysqlclient options, charset and init_command included, reach connect() as given."""
    options = {"charset": "latin1", "init_command": "SET sql_mode='STRICT_TRANS_TABLES'"}
    spec = build_engine_spec(db(MYSQL, OPTIONS=options), pool())
    assert spec.kwargs["connect_args"] == {**options, "connect_timeout": 10}


@pytest.mark.parametrize(
    ("level", "expected"),
    [("read committed", "READ COMMITTED"), ("REPEATABLE READ", "REPEATABLE READ")],
)
def test_mysql_isolation_level_option(level: str, expected: str) -> None:
    """Django's OPTIONS["isolation_level"] becomes SQLAlchemy's isolation_level."""
    spec = build_engine_spec(db(MYSQL, OPTIONS={"isolation_level": level}), pool())
    assert spec.kwargs["isolation_level"] == expected
    assert "isolation_level" not in spec.kwargs["connect_args"]


def test_mysql_unix_socket_host() -> None:
    """A HOST starting with "/" is the server's socket."""
    spec = build_engine_spec(db(MYSQL, HOST="/var/run/mysqld/mysqld.sock", PORT=""), pool())
    assert spec.kwargs["connect_args"]["unix_socket"] == "/var/run/mysqld/mysqld.sock"
    assert spec.url.host == "localhost"
    assert spec.url.port is None


def test_mysql_read_only() -> None:
    """READ_ONLY makes each session read-only on connect."""
    spec = build_engine_spec(MYSQL, pool(read_only=True))
    assert spec.on_connect == ("SET SESSION TRANSACTION READ ONLY",)


# -- Oracle ----------------------------------------------------------------------------


def test_oracle_host_and_port_use_name_as_sid() -> None:
    """With PORT, NAME is the SID at HOST:PORT, as Django's makedsn() call has it."""
    spec = build_engine_spec(ORACLE, pool())
    url = spec.url
    assert url.drivername == "oracle+oracledb"
    assert spec.backend == "oracle+oracledb"
    assert (url.host, url.port, url.database) == ("db.internal", 1521, "ORCLPDB1")
    assert dict(url.query) == {}
    assert spec.kwargs["connect_args"] == {}


def test_oracle_port_without_host_is_localhost() -> None:
    """A PORT with no HOST means localhost, as in Django."""
    spec = build_engine_spec(db(ORACLE, HOST=""), pool())
    assert (spec.url.host, spec.url.port) == ("localhost", 1521)


def test_oracle_without_host_uses_name_as_tns_alias() -> None:
    """Without HOST, NAME is a TNS alias or an Easy Connect string, as in Django."""
    spec = build_engine_spec(db(ORACLE, HOST="", PORT="", NAME="prod_tns"), pool())
    assert (spec.url.host, spec.url.port, dict(spec.url.query)) == ("prod_tns", None, {})
    assert spec.url.username == "app_user"


def test_oracle_django_only_options_are_dropped() -> None:
    """threaded, use_returning_into and pool are Django's; other options pass through."""
    options = {"threaded": True, "use_returning_into": False, "pool": True, "events": True}
    spec = build_engine_spec(db(ORACLE, OPTIONS=options), pool())
    assert spec.kwargs["connect_args"] == {"events": True}


def test_oracle_read_only_is_refused() -> None:
    """Oracle has no session-wide read-only mode, so READ_ONLY is a configuration error."""
    with pytest.raises(ConfigurationError) as info:
        build_engine_spec(ORACLE, pool("analytics", read_only=True))
    assert str(info.value) == (
        'MINGUS_SESSIONS["POOLS"]["analytics"]["READ_ONLY"] is not supported on Oracle, which '
        "has no session-wide read-only mode. Use a read-only database user instead."
    )
    assert info.value.pool == "analytics"


# -- unsupported backends --------------------------------------------------------------


def test_unsupported_engine() -> None:
    """An ENGINE without a SQLAlchemy mapping is ConfigurationError E014."""
    with pytest.raises(ConfigurationError) as info:
        build_engine_spec({"ENGINE": "django.db.backends.dummy"}, pool())
    assert str(info.value) == (
        'DATABASES["default"]["ENGINE"] is \'django.db.backends.dummy\': pool "main" '
        "cannot build a SQLAlchemy engine for it. Supported: PostgreSQL, SQLite, "
        "MySQL/MariaDB and Oracle, through Django's own backends or GeoDjango's. "
        "[mingus_sessions.E014]"
    )
    assert info.value.pool == "main"
