"""Column types for :func:`mingus_sessions.tables.table_for` (private).

Each Django field's internal type maps to a SQLAlchemy type that stores values
the way Django does on each backend: UTC datetimes where the database has no
time zones, durations as microseconds outside PostgreSQL and Oracle, Django's
text formats for dates and times on SQLite.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import models
from django.utils import dateparse, timezone
from django.utils.duration import duration_microseconds
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    Integer,
    Interval,
    LargeBinary,
    Numeric,
    SmallInteger,
    String,
    Text,
    Time,
    TypeDecorator,
    Uuid,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeEngine

if TYPE_CHECKING:
    from typing import TypeAlias

    Field: TypeAlias = models.Field[Any, Any]

__all__ = ["TYPES"]


#: Dialects whose datetime columns keep the time zone (Django's ``supports_timezones``).
_TZ_AWARE = frozenset({"postgresql"})
#: Dialects with a native interval type (Django's ``has_native_duration_field``).
_NATIVE_INTERVAL = frozenset({"postgresql", "oracle"})


class _DateTime(TypeDecorator[datetime.datetime]):
    """``DateTimeField``: aware values become UTC where the column has no zone, as in Django."""

    impl = DateTime
    cache_ok = True

    def __init__(self, use_tz: bool) -> None:
        super().__init__(timezone=use_tz)
        self.use_tz = use_tz

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            # Django writes str(value) and compares as text: SQLAlchemy's own
            # format (always six microsecond digits) would never be equal to it.
            return dialect.type_descriptor(String())
        return dialect.type_descriptor(DateTime(timezone=self.use_tz))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if not isinstance(value, datetime.datetime):
            return value
        aware = timezone.is_aware(value)
        if self.use_tz and not aware:
            # Django's reading of a naive value: wall time in TIME_ZONE.
            value = timezone.make_aware(value, timezone.get_default_timezone())
        if dialect.name not in _TZ_AWARE:
            if self.use_tz:
                value = value.astimezone(datetime.UTC).replace(tzinfo=None)
            elif aware:
                raise ValueError(
                    f"{dialect.name} does not support timezone-aware datetimes when USE_TZ "
                    "is False."
                )
        return str(value) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if isinstance(value, str):
            value = dateparse.parse_datetime(value)
        if isinstance(value, datetime.datetime):
            if self.use_tz and timezone.is_naive(value):
                value = value.replace(tzinfo=datetime.UTC)
            elif not self.use_tz and timezone.is_aware(value):
                value = timezone.make_naive(value, timezone.get_default_timezone())
        return value


class _Date(TypeDecorator[datetime.date]):
    """``DateField``: Django's text format on SQLite, the native type elsewhere."""

    impl = Date
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        # Django's own SQLite connection (join_django=True) parses "date"
        # columns itself: a text impl takes both a str and a date.
        return dialect.type_descriptor(String() if dialect.name == "sqlite" else Date())

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        return str(value) if dialect.name == "sqlite" and value is not None else value

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        return dateparse.parse_date(value) if isinstance(value, str) else value


class _Time(TypeDecorator[datetime.time]):
    """``TimeField``: Django's text format on SQLite, the native type elsewhere."""

    impl = Time
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        # mysqlclient returns TIME as a timedelta, but Django's connection
        # (join_django=True) as a time, which SQLAlchemy's MySQL TIME rejects.
        if dialect.name in ("sqlite", "mysql"):
            return dialect.type_descriptor(String())
        return dialect.type_descriptor(Time())

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        return str(value) if dialect.name == "sqlite" and value is not None else value

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if isinstance(value, str):
            return dateparse.parse_time(value)
        if isinstance(value, datetime.timedelta):
            return (datetime.datetime.min + value).time()
        return value


class _Duration(TypeDecorator[datetime.timedelta]):
    """``DurationField``: an interval where native, else a bigint of microseconds (Django's)."""

    impl = Interval
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        native = dialect.name in _NATIVE_INTERVAL
        return dialect.type_descriptor(Interval() if native else BigInteger())

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if isinstance(value, datetime.timedelta) and dialect.name not in _NATIVE_INTERVAL:
            return duration_microseconds(value)
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if isinstance(value, int):
            return datetime.timedelta(microseconds=value)
        return value


class _IPAddress(TypeDecorator[str]):
    """``GenericIPAddressField``: ``inet`` on PostgreSQL, text elsewhere; always read as str."""

    impl = String
    cache_ok = True

    def __init__(self) -> None:
        super().__init__(39)

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.INET())
        return dialect.type_descriptor(self.impl_instance)

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        return None if value is None else str(value)  # psycopg may load ipaddress objects


def _json(field: Field) -> TypeEngine[Any]:
    # Django stores None as SQL NULL (not JSON null) and uses jsonb on PostgreSQL.
    return JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")


def _string(field: Field) -> TypeEngine[Any]:
    return String(field.max_length)


def _decimal(field: Field) -> TypeEngine[Any]:
    digits: int | None = getattr(field, "max_digits", None)
    places: int | None = getattr(field, "decimal_places", None)
    return Numeric(digits, places, asdecimal=True)


#: Django internal type -> SQLAlchemy type, for every built-in field with a column.
TYPES: dict[str, Callable[[Field], TypeEngine[Any]]] = {
    "AutoField": lambda f: Integer(),
    "BigAutoField": lambda f: BigInteger(),
    "SmallAutoField": lambda f: SmallInteger(),
    "IntegerField": lambda f: Integer(),
    "BigIntegerField": lambda f: BigInteger(),
    "SmallIntegerField": lambda f: SmallInteger(),
    "PositiveIntegerField": lambda f: Integer(),
    "PositiveBigIntegerField": lambda f: BigInteger(),
    "PositiveSmallIntegerField": lambda f: SmallInteger(),
    "BooleanField": lambda f: Boolean(),
    "CharField": _string,
    "SlugField": _string,
    "FileField": _string,
    "FilePathField": _string,
    "TextField": lambda f: Text(),
    "DateField": lambda f: _Date(),
    "DateTimeField": lambda f: _DateTime(use_tz=settings.USE_TZ),
    "TimeField": lambda f: _Time(),
    "DurationField": lambda f: _Duration(),
    "DecimalField": _decimal,
    "FloatField": lambda f: Float(),
    "UUIDField": lambda f: Uuid(),
    "BinaryField": lambda f: LargeBinary(),
    "JSONField": _json,
    "GenericIPAddressField": lambda f: _IPAddress(),
}
