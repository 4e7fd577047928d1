"""Sessions that run on Django's own connection, inside Django's transaction.

``session_scope(join_django=True)`` hands SQLAlchemy the DB-API connection that
Django holds for the pool's alias in this thread, through an engine whose
dialect commits, rolls back and closes nothing: Django owns the transaction and
the connection, so SQLAlchemy may only add SAVEPOINTs to it. Each joined
scope is one savepoint: a failure inside rolls back that scope's work (ORM and
SQLAlchemy alike), and the surrounding ``atomic`` block decides the rest.
"""

from __future__ import annotations

import threading
from types import TracebackType
from typing import Any

from django.db import connections, transaction
from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session, SessionTransaction
from sqlalchemy.pool import NullPool

from . import after_commit
from ._fork import renew_lock_in_child
from .engines import PoolEntry

__all__ = ["close_joined", "open_joined"]

_lock = threading.Lock()
_engines: dict[tuple[str, int], Engine] = {}


def _leave_to_django(dbapi_connection: Any) -> None:
    """Stands in for the dialect's commit, rollback and close: Django does those."""


def _joined_engine(entry: PoolEntry) -> Engine:
    key = (entry.name, id(entry.engine))
    engine = _engines.get(key)
    if engine is not None:
        return engine
    alias = entry.config.database

    def borrow() -> Any:
        return connections[alias].connection

    with _lock:
        engine = _engines.get(key)
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
            # Instance attributes shadow the dialect's methods for this engine
            # only; SAVEPOINT statements still go through as SQL.
            dialect: Any = engine.dialect
            dialect.do_commit = _leave_to_django
            dialect.do_rollback = _leave_to_django
            dialect.do_close = _leave_to_django
            dialect.do_terminate = _leave_to_django
            if entry.spec.vendor == "postgresql":
                # Django loads jsonb as text on its connection; let SQLAlchemy
                # decode it, so JSON reads the same as in a plain session.
                dialect.supports_native_json_deserialization = False
            _engines.clear()  # drop engines of pools that were rebuilt
            _engines[key] = engine
    return engine


def open_joined(entry: PoolEntry) -> tuple[Session, Any, SessionTransaction]:
    """Open a joined session: ``(session, atomic block we opened or None, savepoint)``."""
    alias = entry.config.database
    connection = connections[alias]
    atomic = None
    if not connection.in_atomic_block:
        atomic = transaction.atomic(using=alias)
        atomic.__enter__()
    try:
        connection.ensure_connection()
        session = Session(bind=_joined_engine(entry), expire_on_commit=False)
        # Callbacks registered through a request's or task's scope nested in
        # this one wait for Django's commit too (see after_commit).
        session.info[after_commit.JOINED] = entry.name
        savepoint = session.begin_nested()
    except BaseException as exc:
        if atomic is not None:
            atomic.__exit__(type(exc), exc, exc.__traceback__)
        raise
    return session, atomic, savepoint


def close_joined(
    session: Session,
    savepoint: SessionTransaction | None,
    atomic: Any,
    exc_type: type[BaseException] | None,
    exc: BaseException | None,
    tb: TracebackType | None,
) -> None:
    """Release or roll back the scope's savepoint, then end the atomic block we opened."""
    if exc is not None and savepoint is not None:
        # Its on_commit callbacks wait for Django's commit: drop them now, even
        # if the atomic block around this scope goes on and commits.
        after_commit.discard_savepoint(session, savepoint)
    try:
        if savepoint is not None and savepoint.is_active:
            if exc is None:
                savepoint.commit()
            else:
                savepoint.rollback()
        if exc is None:
            session.commit()  # a no-op on Django's connection: flushes and ends SQLAlchemy's side
    except BaseException as failure:
        if savepoint is not None:
            after_commit.discard_savepoint(session, savepoint)
        session.close()
        if atomic is not None:
            atomic.__exit__(type(failure), failure, failure.__traceback__)
        raise
    session.close()
    if atomic is not None:
        atomic.__exit__(exc_type, exc, tb)


renew_lock_in_child(globals())
