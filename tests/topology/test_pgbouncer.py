"""R17: PgBouncer in transaction mode, started by the test in front of a cluster of its own.

psycopg 3 prepares a statement on the server once it has run a few times
(``prepare_threshold``, 5); under transaction pooling the next transaction may
get another server connection, and the statement is missing there or exists
already. ``PGBOUNCER: "transaction"`` turns that off. ``READ_ONLY`` must hold
through the pooler whether it refuses the ``options`` startup parameter
(PgBouncer's default) or drops it (``ignore_startup_parameters = options``).
"""

from __future__ import annotations

import collections
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.pool import NullPool

from mingus_sessions import ReadOnlyTransactionError, get_engine, is_transient, session_scope
from tests.topology.conftest import Bouncer, Cluster, add_alias, configure

SCOPES = 200
RUNS_PER_SCOPE = 8  # psycopg 3 prepares on the 6th run (prepare_threshold 5)
THREADS = 20


def through(
    monkeypatch: pytest.MonkeyPatch, settings: Any, bouncer: Bouncer, database: str, **pool: Any
) -> None:
    """Pool "bounced" on PgBouncer's ``database`` (``txn`` or ``sess``), with ``pool``'s keys."""
    add_alias(
        monkeypatch,
        "bouncer",
        "127.0.0.1",
        bouncer.port,
        name=database,
        DISABLE_SERVER_SIDE_CURSORS=True,
    )
    configure(settings, {"bounced": {"DATABASE": "bouncer", **pool}})


def repeat_one_statement(scope_number: int) -> None:
    """One scope running the same parameterised statement RUNS_PER_SCOPE times."""
    with session_scope("bounced") as session:
        for run in range(RUNS_PER_SCOPE):
            found = session.execute(
                text("SELECT CAST(:n AS integer) + CAST(:run AS integer)"),
                {"n": scope_number, "run": run},
            ).scalar_one()
            assert found == scope_number + run


def failures_of_many_scopes() -> collections.Counter[str]:
    """Run SCOPES scopes on THREADS threads; count their failures by type and first line."""

    def attempt(number: int) -> str | None:
        try:
            repeat_one_statement(number)
        except Exception as failure:  # each one is counted, none is lost
            first = str(getattr(failure, "orig", failure)).splitlines()[0]
            return f"{type(failure).__name__}: {first[:60]}"
        return None

    with ThreadPoolExecutor(THREADS) as workers:
        outcomes = list(workers.map(attempt, range(SCOPES)))
    return collections.Counter(outcome for outcome in outcomes if outcome is not None)


def test_without_pgbouncer_mode_prepared_statements_break(
    monkeypatch: pytest.MonkeyPatch, settings: Any, bouncer: Bouncer
) -> None:
    """The harness reproduces the defect: a pool that does not declare PGBOUNCER gets
    prepared-statement errors through transaction pooling (psycopg 3's default)."""
    through(monkeypatch, settings, bouncer, "txn", POOL_CLASS="null")
    failures = failures_of_many_scopes()
    print(f"PGBOUNCER None, null pool: {sum(failures.values())} of {SCOPES} scopes failed")
    assert sum(failures.values()) > 0
    assert all("prepared statement" in failure for failure in failures), failures


@pytest.mark.parametrize("pool_class", [None, "queue"], ids=["default-null-pool", "queue-pool"])
def test_transaction_mode_runs_repeated_statements_without_prepared_statement_errors(
    monkeypatch: pytest.MonkeyPatch, settings: Any, bouncer: Bouncer, pool_class: str | None
) -> None:
    """With PGBOUNCER "transaction", 200 scopes each running one statement 8 times through
    PgBouncer all succeed, on the default null pool and on a queue pool alike."""
    extra = {"POOL_CLASS": pool_class} if pool_class else {}
    through(monkeypatch, settings, bouncer, "txn", PGBOUNCER="transaction", **extra)
    failures = failures_of_many_scopes()
    print(f"PGBOUNCER transaction, {pool_class or 'null'} pool: {sum(failures.values())} failed")
    assert failures == collections.Counter()
    assert isinstance(get_engine("bounced").pool, NullPool) is (pool_class is None)


def write_note(title: str) -> None:
    with session_scope("bounced") as session:
        session.execute(text("INSERT INTO notes (title) VALUES (:t)"), {"t": title})


def titles(backend: Cluster, title: str) -> int:
    return int(backend.sql("SELECT count(*) FROM notes WHERE title = %s", (title,))[0][0])


def assert_write_refused(backend: Cluster, title: str) -> None:
    """A write through pool "bounced" fails as a read-only refusal and commits nothing."""
    with pytest.raises(ReadOnlyTransactionError) as info:
        write_note(title)
    cause = info.value.__cause__
    assert isinstance(cause, sa_exc.DBAPIError)
    assert getattr(cause.orig, "sqlstate", None) == "25006"  # read_only_sql_transaction
    assert not is_transient(info.value)
    assert titles(backend, title) == 0


@pytest.fixture(params=["strict", "lenient"])
def any_bouncer(request: pytest.FixtureRequest) -> Bouncer:
    """PgBouncer as installed, and with ignore_startup_parameters = options."""
    return request.getfixturevalue("bouncer" if request.param == "strict" else "lenient_bouncer")


@pytest.mark.parametrize(("database", "mode"), [("txn", "transaction"), ("sess", "session")])
def test_read_only_pool_refuses_writes_through_pgbouncer(
    monkeypatch: pytest.MonkeyPatch,
    settings: Any,
    backend: Cluster,
    any_bouncer: Bouncer,
    database: str,
    mode: str,
) -> None:
    """A READ_ONLY pool declared behind PgBouncer connects (no unsupported startup parameter),
    reads, and has its writes refused, whether PgBouncer refuses or drops "options"."""
    through(monkeypatch, settings, any_bouncer, database, PGBOUNCER=mode, READ_ONLY=True)
    with session_scope("bounced") as session:
        assert session.execute(text("SELECT count(*) FROM notes")).scalar_one() >= 0
    assert_write_refused(backend, f"read-only {database} {id(any_bouncer)}")


def test_read_only_pool_that_does_not_declare_pgbouncer_works_through_it(
    monkeypatch: pytest.MonkeyPatch, settings: Any, backend: Cluster, any_bouncer: Bouncer
) -> None:
    """A READ_ONLY pool that does not even declare PGBOUNCER connects through PgBouncer (no
    startup parameter for it to refuse or, with ignore_startup_parameters, to drop) and its
    writes are refused."""
    through(monkeypatch, settings, any_bouncer, "txn", READ_ONLY=True, POOL_CLASS="null")
    with session_scope("bounced") as session:
        assert session.execute(text("SELECT count(*) FROM notes")).scalar_one() >= 0
    assert_write_refused(backend, f"read-only, undeclared pooler {id(any_bouncer)}")


def test_read_only_session_mode_covers_autocommit(
    monkeypatch: pytest.MonkeyPatch, settings: Any, backend: Cluster, bouncer: Bouncer
) -> None:
    """Behind PgBouncer in session mode, a READ_ONLY pool in AUTOCOMMIT refuses writes too
    (its server session is set read-only on connect)."""
    through(
        monkeypatch,
        settings,
        bouncer,
        "sess",
        PGBOUNCER="session",
        READ_ONLY=True,
        ISOLATION_LEVEL="AUTOCOMMIT",
    )
    assert_write_refused(backend, "read-only autocommit")


def test_read_only_pool_leaves_nothing_for_the_next_client(
    monkeypatch: pytest.MonkeyPatch, settings: Any, backend: Cluster, bouncer: Bouncer
) -> None:
    """After READ_ONLY pools used every server connection of the transaction pool, a write
    pool through the same PgBouncer still writes: nothing read-only leaked into the sessions."""
    add_alias(
        monkeypatch,
        "bouncer",
        "127.0.0.1",
        bouncer.port,
        name="txn",
        DISABLE_SERVER_SIDE_CURSORS=True,
    )
    configure(
        settings,
        {
            "reader": {"DATABASE": "bouncer", "PGBOUNCER": "transaction", "READ_ONLY": True},
            "bounced": {"DATABASE": "bouncer", "PGBOUNCER": "transaction"},
        },
    )

    def read(_: int) -> str:
        with session_scope("reader") as session:
            return str(session.execute(text("SHOW transaction_read_only")).scalar_one())

    with ThreadPoolExecutor(8) as workers:
        assert set(workers.map(read, range(40))) == {"on"}
    for number in range(8):
        write_note(f"after readers {number}")
    written = backend.sql("SELECT count(*) FROM notes WHERE title LIKE %s", ("after readers %",))
    assert written == [(8,)]


def test_server_side_cursors_work_inside_a_transaction(
    monkeypatch: pytest.MonkeyPatch, settings: Any, bouncer: Bouncer
) -> None:
    """stream_results and yield_per (psycopg's DECLARE ... WITHOUT HOLD inside the scope's
    transaction) keep one server connection for the transaction, so they work in transaction
    mode and are not refused."""
    through(monkeypatch, settings, bouncer, "txn", PGBOUNCER="transaction")
    query = text("SELECT g FROM generate_series(1, 5000) AS g")
    with session_scope("bounced") as session:
        streamed = session.execute(query, execution_options={"stream_results": True})
        assert sum(streamed.scalars()) == 5000 * 5001 // 2
        batches = session.execute(query, execution_options={"yield_per": 500})
        assert sum(len(batch) for batch in batches.partitions()) == 5000
