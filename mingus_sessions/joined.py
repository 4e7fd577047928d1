"""Sessions that run on Django's own connection, inside Django's transaction.

``session_scope(join_django=True)`` hands SQLAlchemy the DB-API connection that
Django holds for the pool's alias in this thread, through an engine whose
dialect commits, rolls back and closes nothing: Django owns the transaction and
the connection, so SQLAlchemy may only add SAVEPOINTs to it. Each joined
scope is one savepoint, emitted when the scope starts: a failure inside rolls
back that scope's work (ORM and SQLAlchemy alike), and the surrounding
``atomic`` block decides the rest.

Two rules keep a joined session from claiming what only Django can do: its
``commit()`` and ``rollback()`` refuse (the scope ends its savepoint, Django
ends the transaction), and nothing runs in a Django transaction already marked
for rollback (an error caught inside ``atomic()``), whose work Django would
throw away.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from django.db import connections, transaction
from django.db.transaction import TransactionManagementError
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.dialects.postgresql import HSTORE
from sqlalchemy.dialects.postgresql.psycopg import PGCompiler_psycopg
from sqlalchemy.orm import Session, SessionTransaction
from sqlalchemy.pool import NullPool
from sqlalchemy.sql.expression import ReleaseSavepointClause, RollbackToSavepointClause

from ._core import callbacks
from ._core.entry import PoolEntry
from ._core.errors import TransactionError
from ._core.state import state

__all__ = ["JoinedTransactionError", "open_joined"]

logger = logging.getLogger("mingus_sessions")


class JoinedTransactionError(TransactionError, TransactionManagementError):
    """A joined scope refused to do what only Django's transaction may decide.

    Raised when a joined session is asked to commit or roll back Django's
    transaction, and when work would run in a Django transaction that is
    marked for rollback (Django would throw it away). It is both this
    package's :class:`~mingus_sessions.errors.TransactionError` and the
    ``TransactionManagementError`` that Django's ORM raises in the same places.
    """


class _JoinedSession(Session):
    """A session on Django's connection: Django alone commits or rolls back its transaction."""

    def __init__(self, alias: str, pool: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._django_alias = alias
        self._pool = pool

    def commit(self) -> None:
        raise JoinedTransactionError(
            f"session.commit() inside a joined scope (join_django=True) on pool {self._pool!r}: "
            f"the transaction belongs to Django (database {self._django_alias!r}). The scope "
            "releases its savepoint when it ends and Django commits when the atomic block "
            "ends; call session.flush() to send pending changes now.",
            pool=self._pool,
        )

    def rollback(self) -> None:
        raise JoinedTransactionError(
            f"session.rollback() inside a joined scope (join_django=True) on pool "
            f"{self._pool!r}: the transaction belongs to Django (database "
            f"{self._django_alias!r}). Raise an exception to roll back the scope's work, or "
            "roll back part of it with a nested session_scope() or session.begin_nested().",
            pool=self._pool,
        )


@event.listens_for(_JoinedSession, "before_commit")
def _refuse_release_in_doomed_transaction(session: Session) -> None:
    """Refuse to release a savepoint (a scope's, a ``begin_nested()``) Django will roll back.

    Raised before the flush and the RELEASE, so the savepoint stays open for
    the rollback that follows: released, its work would be thrown away with
    Django's transaction while the caller believed it kept.
    """
    assert isinstance(session, _JoinedSession)
    refusal = _refusal(session._django_alias, session._pool)
    if refusal is not None:
        raise refusal


def _leave_to_django(dbapi_connection: Any) -> None:
    """Stands in for the dialect's commit, rollback and close: Django does those."""


class _CastAfterParentheses(PGCompiler_psycopg):
    """Bind casts as ``(%(x)s)::INTEGER`` on Django's psycopg connection.

    Django's cursors bind on the client (psycopg's ClientCursor): the value is
    written into the SQL, a negative number as `` -2147483648``, and
    ``-2147483648::INTEGER`` parses as ``-(2147483648::INTEGER)``, which is out
    of range. The parentheses make the cast apply to the whole value, whichever
    way the cursor binds.
    """

    def render_bind_cast(self, type_: Any, dbapi_type: Any, sqltext: str) -> str:
        cast: str = super().render_bind_cast(  # type: ignore[no-untyped-call]
            type_, dbapi_type, f"({sqltext})"
        )
        return cast


class _HstoreAsDjangoLoads(HSTORE):
    """HSTORE on Django's connection: reads a dict or text, whichever Django's adapters give.

    With ``django.contrib.postgres`` installed, Django registers psycopg's
    hstore adapters on its connections (values load as dicts); without it they
    load as text, which SQLAlchemy parses. Values are always sent as text.
    """

    def result_processor(self, dialect: Any, coltype: Any) -> Any:
        parse = super().result_processor(dialect, coltype)

        def process(value: Any) -> Any:
            return parse(value) if isinstance(value, str) else value

        return process


def _refusal(alias: str, pool: str) -> JoinedTransactionError | None:
    """The error for work in Django's transaction on ``alias`` if it is marked for rollback."""
    django = connections[alias]
    if not django.needs_rollback:
        return None
    error = JoinedTransactionError(
        f"Django's transaction on database {alias!r} is marked for rollback by an earlier "
        "error caught inside its atomic block (an IntegrityError, say), so Django will roll it "
        f"back: the joined session of pool {pool!r} refuses to work in it, since its work "
        "would be thrown away. Let the error end the atomic block, or catch it in a nested "
        "transaction.atomic() around the statement that may fail.",
        pool=pool,
    )
    error.__cause__ = getattr(django, "rollback_exc", None)  # Django keeps the caught error
    return error


def _joined_engine(entry: PoolEntry) -> Engine:
    key = (entry.name, id(entry.engine))
    engine = state.joined_engines.get(key)
    if engine is not None:
        return engine
    alias = entry.config.database

    def borrow() -> Any:
        return connections[alias].connection

    with state.lock:
        engine = state.joined_engines.get(key)
        if engine is None:
            # A NullPool asks ``borrow`` for the connection at every checkout,
            # in the calling thread, so each thread gets its own Django connection.
            engine = create_engine(
                entry.spec.url,
                creator=borrow,
                poolclass=NullPool,
                logging_name=f"{entry.name}.joined",
                hide_parameters=entry.spec.kwargs["hide_parameters"],
                # Registering hstore adapters would change Django's connection.
                **({"use_native_hstore": False} if entry.spec.vendor == "postgresql" else {}),
            )
            _leave_connection_setup_to_django(engine)
            _adapt_dialect(engine.dialect)
            _refuse_in_doomed_transactions(engine.dialect, alias, entry.name)
            state.joined_engines.clear()  # drop engines of pools that were rebuilt
            state.joined_engines[key] = engine
            listeners = state.panel_listeners
            if listeners is not None:
                # Built during a request the debug-toolbar panel instruments.
                listeners.watch(engine, entry.name, joined=True)
    return engine


#: The listeners ``create_engine`` adds to set up each new DB-API connection
#: for its dialect: psycopg's notice handler, SQLite's ``regexp`` and ``floor``
#: functions, MySQL's ``SET NAMES``, an isolation level.
_CONNECTION_SETUP = (
    "create_engine.<locals>.on_connect",
    "DefaultDialect._builtin_onconnect.<locals>.builtin_connect",
)


def _leave_connection_setup_to_django(engine: Engine) -> None:
    """Keep SQLAlchemy's per-connection dialect setup off Django's connection.

    The joined engine's pool "connects" at every checkout (it borrows Django's
    connection each time), so that setup would run again at every joined
    scope: psycopg's notice handlers pile up on a persistent connection, and
    SQLite's ``regexp`` would replace Django's (which also takes numbers, as
    the ORM's ``__regex`` on an integer column needs). Django has set its
    connection up already. The dialect's one-time ``initialize`` (server
    version and capabilities) is kept.
    """
    pool = engine.pool
    for listener in list(pool.dispatch.connect):
        if getattr(listener, "__qualname__", "") in _CONNECTION_SETUP:
            event.remove(pool, "connect", listener)


def _adapt_dialect(dialect: Any) -> None:
    """Make ``dialect`` leave the transaction to Django and read values as Django loads them."""
    # Instance attributes shadow the dialect's methods for this engine
    # only; SAVEPOINT statements still go through as SQL.
    dialect.do_commit = _leave_to_django
    dialect.do_rollback = _leave_to_django
    dialect.do_close = _leave_to_django
    dialect.do_terminate = _leave_to_django
    if dialect.name != "postgresql":
        return
    # Django loads jsonb as text on its connection; let SQLAlchemy
    # decode it, so JSON reads the same as in a plain session.
    dialect.supports_native_json_deserialization = False
    dialect.colspecs = {**dialect.colspecs, HSTORE: _HstoreAsDjangoLoads}
    if dialect.driver == "psycopg":
        dialect.statement_compiler = _CastAfterParentheses


_SAVEPOINT_ENDS = (RollbackToSavepointClause, ReleaseSavepointClause)


def _refuse_in_doomed_transactions(dialect: Any, alias: str, pool: str) -> None:
    """Make ``dialect`` refuse statements in a Django transaction marked for rollback.

    All but those that end a savepoint. Its ``do_execute`` methods are wrapped
    (instance attributes, as for commit), which costs a function call per
    statement; engine events would put every statement of the engine on
    SQLAlchemy's slower event path.
    """

    def checked(execute: Any) -> Any:
        def do_execute(cursor: Any, statement: Any, *args: Any) -> None:
            context = args[-1] if args else None
            clause = getattr(getattr(context, "compiled", None), "statement", None)
            django = connections[alias]
            # Rolling back to a savepoint undoes the failure that marked the
            # transaction (every savepoint of this engine was begun before
            # it). A RELEASE does no work, and a refused one could not be
            # rolled back: sessions refuse to release earlier
            # (_refuse_release_in_doomed_transaction).
            if django.needs_rollback and not isinstance(clause, _SAVEPOINT_ENDS):
                refusal = _refusal(alias, pool)
                assert refusal is not None
                raise refusal
            execute(cursor, statement, *args)
            if django.needs_rollback and isinstance(clause, RollbackToSavepointClause):
                # As Django's own atomic() does once it rolled back to its
                # savepoint: the work that failed is gone, the block goes on.
                django.set_rollback(False)

        return do_execute

    dialect.do_execute = checked(dialect.do_execute)
    dialect.do_executemany = checked(dialect.do_executemany)
    dialect.do_execute_no_params = checked(dialect.do_execute_no_params)


def open_joined(entry: PoolEntry) -> tuple[Session, Any, SessionTransaction]:
    """Open a joined scope: ``(session, the __exit__ of the atomic block it opened or None,
    its savepoint)``; :func:`~mingus_sessions._core.scopes.end_scope` ends it."""
    alias = entry.config.database
    guard = state.connect_guard
    if guard is not None:
        # The pytest plugin: refused as the ORM's first query would be, even on
        # a Django connection the test database setup left open.
        guard(alias)
    connection = connections[alias]
    refusal = _refusal(alias, entry.name) if connection.in_atomic_block else None
    if refusal is not None:
        raise refusal
    atomic = None
    if not connection.in_atomic_block:
        atomic = transaction.atomic(using=alias)
        atomic.__enter__()
    session: Session | None = None
    try:
        connection.ensure_connection()
        session = _JoinedSession(
            alias, entry.name, bind=_joined_engine(entry), expire_on_commit=False
        )
        # on_commit callbacks of this scope, and of a request's or task's
        # scope nested in it, wait for Django's commit.
        session.info[callbacks.JOINED] = functools.partial(transaction.on_commit, using=alias)
        savepoint = session.begin_nested()
        # SQLAlchemy emits SAVEPOINT on first use; the ORM's writes in the
        # scope, on the same connection, must already be inside it.
        session.connection()
    except BaseException as exc:
        if session is not None:
            session.close()
        if atomic is not None:
            atomic.__exit__(type(exc), exc, exc.__traceback__)
        raise
    return session, atomic.__exit__ if atomic is not None else None, savepoint
