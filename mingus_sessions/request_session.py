"""``request.db_session``: :class:`RequestSession`, the request's scope standing in for its session.

Reading, setting or deleting an attribute on it opens the session (once) and
does it on the session; ``isinstance(request.db_session, Session)`` is true,
and neither that check nor ``repr()`` opens the session. The middleware
(:mod:`mingus_sessions.middleware`, which re-exports the class) makes one per
request and ends it through the one way out of a scope.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sqlalchemy.orm import Session

from . import conf
from ._core.frames import Frame
from ._core.state import state
from .sessions import LazyScope

__all__ = ["RequestSession", "new_request_session", "request_pool"]

_object_setattr = object.__setattr__
_object_delattr = object.__delattr__

#: What a RequestSession keeps on itself: every other attribute is the session's.
_STATE = frozenset(
    {
        "parent",
        "joined",
        "early",
        "opened_at",
        "_session",
        "breaker",
        "savepoint",
        "release",
        "finished",
        "trace",
    }
)


class RequestSession(LazyScope):
    """``request.db_session``: the request's scope, standing in for its session.

    Reading, setting or deleting an attribute opens the session (once) and
    does it on the session, as Django's ``SimpleLazyObject`` did;
    ``isinstance(request.db_session, Session)`` is true, and neither it nor
    ``repr()`` opens the session. The object is also the request's frame in the
    context, so ``current_session()`` in the view is this same session.

    :func:`new_request_session` makes one writing nothing (but its parent,
    inside another scope): its fields start as the class attributes of
    :class:`~mingus_sessions._core.frames.Frame`, and its pool is the default
    pool of the settings in force, read when something asks (opening its
    session, a nested scope looking for it), so a request that never uses its
    session pays for one small object and no Python call. ``__class__``
    answers ``isinstance()`` as Django's lazy objects do: the session's class,
    without opening it.
    """

    # Nothing to set: object's own C-level __init__ (see new_request_session).
    __init__ = object.__init__  # type: ignore[assignment]

    @property
    def pool(self) -> str:  # type: ignore[override]
        """``DEFAULT_POOL``; ConfigurationError if the settings are invalid."""
        return request_pool()

    @property  # type: ignore[misc]
    def __class__(self) -> type:  # what isinstance() asks: the session's class
        session = self._session
        return Session if session is None else type(session)

    @property
    def _wrapped(self) -> Session:
        """The session, opened now if it was not yet (``SimpleLazyObject``'s name for it)."""
        return self.session

    def __getattr__(self, name: str) -> Any:
        if name in _OWN:
            # One of ours whose getter raised AttributeError: report it rather
            # than ask the session (which would come back here, and again).
            raise AttributeError(name)
        return getattr(self.session, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _STATE:
            _object_setattr(self, name, value)
        else:
            setattr(self.session, name, value)

    def __delattr__(self, name: str) -> None:
        if name in _STATE:
            _object_delattr(self, name)
        else:
            delattr(self.session, name)

    def __repr__(self) -> str:
        session = self._session
        if session is None:
            return f"<RequestSession of pool {self.pool!r}, not opened yet>"
        return f"<RequestSession of pool {self.pool!r}: {session!r}>"

    def __eq__(self, other: object) -> bool:
        if other is self:
            return True
        session = self._session  # not opened: no session can be this one
        return session is not None and session == other

    def __hash__(self) -> int:
        return hash(self.session)  # equal to its session, so hashed as it is

    def __iter__(self) -> Iterator[Any]:
        return iter(self.session)

    def __contains__(self, instance: object) -> bool:
        return instance in self.session

    def __dir__(self) -> list[str]:
        return dir(self.session)

    def __copy__(self) -> RequestSession:
        return self  # a copy of the request still has the request's session

    def __deepcopy__(self, memo: dict[int, Any]) -> RequestSession:
        return self


#: Names a RequestSession answers itself, never forwarded to the session.
_OWN = _STATE | frozenset(name for klass in RequestSession.__mro__[:-1] for name in vars(klass))

_new = RequestSession.__new__


def request_pool() -> str:
    """The pool of request scopes: ``DEFAULT_POOL``, read once per settings (the registry's)."""
    pool = state.request_pool
    if pool is None:
        config = conf.get_config()  # ConfigurationError if the settings are invalid
        state.request_monitoring = config.monitoring
        pool = state.request_pool = config.default_pool
    return pool


def new_request_session(parent: Frame | None) -> RequestSession:
    """A request's scope, inside ``parent`` (an active scope, or None)."""
    scope: RequestSession = _new(RequestSession)
    if parent is not None:  # served inside a scope (a test's sa_session)
        _object_setattr(scope, "parent", parent)
    return scope
