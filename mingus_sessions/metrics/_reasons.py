"""Why a database could not be reached, in the taxonomy's words.

Private to the health checks. A failed ping is reported as ``unreachable: <why>``
where ``<why>`` is one of :data:`REASONS`, read from the error's chain: the
SQLSTATE (PostgreSQL), the error number (MySQL/MariaDB), the taxonomy class the
engine's listener translated it into, and the drivers' own words (libpq reports
a refused port or an unknown host as text only). A failure none of them
explains stays ``unreachable (<exception class>)``. Never the error's text: it
may quote a host, a role or a database name an anonymous caller should not see,
and the detail is shown to staff only anyway.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from sqlalchemy import exc as sa_exc

from .._core.errors import AuthenticationError, ConnectionTimeoutError

__all__ = ["REASONS", "unreachable_detail"]

REFUSED = "refused"
UNKNOWN_HOST = "unknown host"
DATABASE_MISSING = "database missing"
AUTHENTICATION = "authentication failed"
TIMED_OUT = "timed out"
REASONS = (REFUSED, UNKNOWN_HOST, DATABASE_MISSING, AUTHENTICATION, TIMED_OUT)

_SQLSTATES = {
    "3D000": DATABASE_MISSING,  # invalid_catalog_name
    "28P01": AUTHENTICATION,  # invalid_password
    "28000": AUTHENTICATION,  # invalid_authorization_specification (no such role, pg_hba)
}
_MYSQL_ERRORS = {
    1049: DATABASE_MISSING,  # ER_BAD_DB_ERROR
    1045: AUTHENTICATION,  # ER_ACCESS_DENIED_ERROR
    1044: AUTHENTICATION,  # ER_DBACCESS_DENIED_ERROR
    1698: AUTHENTICATION,  # ER_ACCESS_DENIED_NO_PASSWORD_ERROR
    2005: UNKNOWN_HOST,  # CR_UNKNOWN_HOST
}
#: MySQL's "could not connect" (2002 socket, 2003 TCP) and "lost connection" (2013) carry the
#: system error: ETIMEDOUT (110) is a timeout; otherwise the first two are a refusal.
_MYSQL_CONNECT = (2002, 2003, 2013)
_ETIMEDOUT = re.compile(r"\b110\b")
#: The drivers' words, lower case, most specific first.
_WORDS = (
    ("could not translate host name", UNKNOWN_HOST),
    ("failed to resolve host", UNKNOWN_HOST),
    ("name or service not known", UNKNOWN_HOST),
    ("nodename nor servname", UNKNOWN_HOST),
    ("temporary failure in name resolution", UNKNOWN_HOST),
    ("unknown mysql server host", UNKNOWN_HOST),
    ("does not exist", None),  # "database ... does not exist" or "role ... does not exist"
    ("unknown database", DATABASE_MISSING),
    ("unable to open database file", DATABASE_MISSING),
    ("password authentication failed", AUTHENTICATION),
    ("no pg_hba.conf entry", AUTHENTICATION),
    ("access denied", AUTHENTICATION),
    ("connection refused", REFUSED),
    ("timeout expired", TIMED_OUT),
    ("timed out", TIMED_OUT),
)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, its causes and contexts, and the driver errors SQLAlchemy wraps."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        found = pending.pop(0)
        if found is None or id(found) in seen:
            continue
        seen.add(id(found))
        yield found
        if isinstance(found, sa_exc.DBAPIError) and isinstance(found.orig, BaseException):
            pending.append(found.orig)
        pending += [found.__cause__, found.__context__]


def _by_code(error: BaseException) -> str | None:
    code = getattr(error, "sqlstate", None) or getattr(error, "pgcode", None)
    if isinstance(code, str) and code in _SQLSTATES:
        return _SQLSTATES[code]
    args = getattr(error, "args", ())
    if args and isinstance(args[0], int) and type(error).__module__.startswith("MySQLdb"):
        if args[0] in _MYSQL_CONNECT:
            text = str(args[1]) if len(args) > 1 else ""
            if _ETIMEDOUT.search(text) or "timed out" in text.lower():
                return TIMED_OUT
            return REFUSED if args[0] != 2013 else None
        return _MYSQL_ERRORS.get(args[0])
    return None


def _by_words(error: BaseException) -> str | None:
    text = str(error).lower()
    for words, reason in _WORDS:
        if words not in text:
            continue
        if reason is not None:
            return reason
        if "database" in text:
            return DATABASE_MISSING
        if "role" in text or "user" in text:
            return AUTHENTICATION
    return None


def reason_of(exc: BaseException) -> str | None:
    """One of :data:`REASONS` for a failed connection, or None when nothing says which."""
    chain = list(_chain(exc))
    for error in chain:
        found = _by_code(error)
        if found is not None:
            return found
    for error in chain:
        if isinstance(error, AuthenticationError):
            return AUTHENTICATION
        if isinstance(error, ConnectionTimeoutError | TimeoutError):
            return TIMED_OUT
    for error in chain:
        found = _by_words(error)
        if found is not None:
            return found
    return None


def unreachable_detail(exc: BaseException) -> str:
    """``unreachable: <reason>``, or ``unreachable (<exception class>)`` without one."""
    reason = reason_of(exc)
    if reason is not None:
        return f"unreachable: {reason}"
    return f"unreachable ({type(exc).__name__})"
