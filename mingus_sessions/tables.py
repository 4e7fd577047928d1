"""SQLAlchemy Core tables for Django models: :func:`table_for`.

``table_for(Book)`` returns a :class:`~sqlalchemy.Table` named after
``Book._meta.db_table``, with one column per concrete local field, the primary
key, and foreign keys to the tables of the related models (built on demand).
Every table lives on the one module-level :data:`metadata` and is built once
per process, so the same model always gives the same ``Table`` object.

The tables are for querying and writing rows that the ORM also reads: their
types store values the way Django does on each backend (UTC datetimes on
backends without time zones, durations as microseconds outside PostgreSQL and
Oracle, Django's text formats on SQLite). They are not for DDL: Django's
migrations own the schema.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import TYPE_CHECKING, Any, NamedTuple

from django.core.signals import setting_changed
from django.db import models
from django.dispatch import receiver
from django.utils import timezone
from sqlalchemy import (
    Column,
    FetchedValue,
    ForeignKeyConstraint,
    Table,
)
from sqlalchemy.types import TypeEngine, to_instance

from ._column_types import TYPES
from ._core.errors import SessionError
from ._core.state import state

__all__ = ["TableMappingError", "metadata", "table_for"]

#: The one ``MetaData`` that holds every table :func:`table_for` builds (the
#: registry's, which a test's reset and a change of ``USE_TZ`` clear).
metadata = state.table_metadata

if TYPE_CHECKING:
    from typing import TypeAlias

    Model: TypeAlias = type[models.Model]
    Field: TypeAlias = models.Field[Any, Any]
    Overrides: TypeAlias = Mapping[str, TypeEngine[Any] | type[TypeEngine[Any]]]


class TableMappingError(SessionError, TypeError):
    """A model cannot be mapped to a table: abstract, swapped, or a field of unknown type."""


_AUTO = frozenset({"AutoField", "BigAutoField", "SmallAutoField"})


# -- Building and caching ----------------------------------------------------------------------


class _Entry(NamedTuple):
    table: Table
    signature: frozenset[tuple[str, str]]  # the overrides it was built with


@dataclass
class _Build:
    """What one :func:`table_for` call builds; published to the cache once complete."""

    overrides: dict[Model, Mapping[str, TypeEngine[Any]]] = dataclass_field(default_factory=dict)
    tables: dict[Model, Table] = dataclass_field(default_factory=dict)
    foreign_keys: list[tuple[Table, str, Model, str]] = dataclass_field(default_factory=list)


def table_for(model: Model, *, overrides: Overrides | None = None) -> Table:
    """The :class:`~sqlalchemy.Table` of a Django model, built on first use and cached.

    Proxy models give their concrete model's table; the tables of related
    models are built too, on the same :data:`metadata`. ``overrides`` maps
    field names to SQLAlchemy types, for fields of a type :func:`table_for` does
    not know or to replace its choice. They take effect when the table is built:
    later calls without ``overrides`` return the cached table, and a later call
    with different ``overrides`` raises :class:`TableMappingError` instead of
    returning a table whose types are not the ones asked for.
    """
    entry: _Entry | None = state.tables.get(model) if isinstance(model, type) else None
    if entry is not None and not overrides:
        return entry.table
    concrete = _concrete(model, needed_by=None)
    types = _normalize(concrete, overrides or {})
    with state.lock:
        entry = state.tables.get(concrete)
        if entry is None:
            entry = _build_all(concrete, types)
        elif types and _signature(types) != entry.signature:
            raise TableMappingError(
                f"The table of {concrete._meta.label} was already built with "
                f"{_describe(entry.signature)}, not {_describe(_signature(types))}. Pass the same "
                f"overrides on every call, and call table_for({concrete.__name__}, overrides=...) "
                "before building any table that refers to it."
            )
        state.tables[model] = entry
    return entry.table


def _build_all(model: Model, types: Mapping[str, TypeEngine[Any]]) -> _Entry:
    build = _Build()
    try:
        _build(model, types, build, needed_by=None)
        # Foreign keys last: in a cycle (or a self reference) the target was not built yet.
        for table, column, target, target_column in build.foreign_keys:
            target_table = _lookup(target, build)
            table.append_constraint(ForeignKeyConstraint([column], [target_table.c[target_column]]))
    except BaseException:
        for table in build.tables.values():
            metadata.remove(table)
        raise
    for built, table in build.tables.items():
        state.tables[built] = _Entry(table, _signature(build.overrides[built]))
    built_entry: _Entry = state.tables[model]
    return built_entry


def _build(
    model: Model, types: Mapping[str, TypeEngine[Any]], build: _Build, needed_by: Field | None
) -> None:
    build.overrides[model] = types  # marks the model as in progress
    fields = model._meta.local_concrete_fields
    for field in fields:
        if isinstance(field, models.ForeignKey):
            target = _concrete(field.related_model, needed_by=field)
            if target not in state.tables and target not in build.overrides:
                _build(target, {}, build, needed_by=field)
    name = model._meta.db_table
    if name in metadata.tables:
        built = {**{m: e.table for m, e in state.tables.items()}, **build.tables}
        owner = next((m for m, t in built.items() if t.name == name and not m._meta.proxy), None)
        raise TableMappingError(
            f'{model._meta.label} uses the table "{name}", which '
            f"{owner._meta.label if owner else 'another Table'} already maps on "
            "mingus_sessions.tables.metadata: a table name can be mapped once."
        )
    pk_fields = set(model._meta.pk_fields)
    columns = [_column(field, field in pk_fields, build, needed_by) for field in fields]
    table = Table(name, metadata, *columns, comment=model._meta.db_table_comment)
    build.tables[model] = table
    for field in fields:
        if isinstance(field, models.ForeignKey):
            target = _concrete(field.related_model, needed_by=field)
            build.foreign_keys.append((table, _name(field), target, _name(field.target_field)))


def _column(field: Field, pk: bool, build: _Build, needed_by: Field | None) -> Column[Any]:
    kwargs: dict[str, Any] = {
        "primary_key": pk,
        "nullable": field.null and not pk,
        "unique": field.unique and not pk,
        "autoincrement": field.get_internal_type() in _AUTO,
        "comment": field.db_comment,
    }
    generated = isinstance(field, models.GeneratedField)
    if field.has_default() or (
        # The ORM writes "" (b"" for binary) into a NOT NULL text column left unset.
        field.empty_strings_allowed
        and not (field.null or pk or generated or field.has_db_default())
    ):
        kwargs["default"] = field.get_default
    if generated or field.has_db_default():
        kwargs["server_default"] = FetchedValue()
    if generated:
        kwargs["server_onupdate"] = FetchedValue()
    now = _auto_now(field)
    if now is not None:
        kwargs["default"] = now
        if getattr(field, "auto_now", False):
            kwargs["onupdate"] = now
    return Column(_name(field), _type(field, build, needed_by), **kwargs)


def _type(field: Field, build: _Build, needed_by: Field | None) -> TypeEngine[Any]:
    override = build.overrides[field.model].get(field.name)
    if override is not None:
        return override
    if isinstance(field, models.ForeignKey):
        # The target's type without its autoincrement: an AutoField is
        # referred to by a plain integer column.
        target = _concrete(field.related_model, needed_by=field)
        if target in build.tables or target in state.tables:
            return _lookup(target, build).c[_name(field.target_field)].type
        return _type(field.target_field, build, field)  # a target still in progress
    source = field
    if isinstance(field, models.GeneratedField) and field.output_field is not None:
        source = field.output_field
    factory = TYPES.get(source.get_internal_type())
    if factory is None:
        raise _unsupported(field, source, needed_by)
    return factory(source)


def _unsupported(field: Field, source: Field, needed_by: Field | None) -> TableMappingError:
    model = field.model
    kind = source.get_internal_type()
    cls = type(source)
    message = (
        f"{model._meta.label}.{field.name} is a {kind} ({cls.__module__}.{cls.__qualname__}), "
        f"which table_for() has no SQLAlchemy type for. Give it one: "
        f'table_for({model.__name__}, overrides={{"{field.name}": <a sqlalchemy type that '
        f"matches the column, e.g. sqlalchemy.String(100)>}})."
    )
    if needed_by is not None:
        message += (
            f" {model._meta.label} is mapped because {needed_by.model._meta.label}."
            f"{needed_by.name} refers to it: call table_for({model.__name__}, overrides=...) first."
        )
    return TableMappingError(message)


def _auto_now(field: Field) -> Callable[[], Any] | None:
    if not (getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False)):
        return None
    kind = field.get_internal_type()
    if kind == "DateTimeField":
        return timezone.now
    if kind == "DateField":
        return datetime.date.today  # as DateField.pre_save does
    return lambda: datetime.datetime.now().time()  # TimeField


def _name(field: Field) -> str:
    # Only fields with a column (local_concrete_fields) get here.
    return str(field.column)


def _lookup(model: Model, build: _Build) -> Table:
    table = build.tables.get(model)
    return table if table is not None else state.tables[model].table


def _concrete(model: Any, needed_by: Field | None) -> Model:
    where = f" ({needed_by.model._meta.label}.{needed_by.name} refers to it)" if needed_by else ""
    if not (isinstance(model, type) and issubclass(model, models.Model)):
        raise TableMappingError(f"table_for() takes a Django model class, not {model!r}{where}.")
    meta = model._meta
    if meta.abstract:
        raise TableMappingError(
            f"{meta.label} is abstract: it has no table{where}. Pass one of its concrete "
            "subclasses to table_for()."
        )
    if meta.swapped:
        raise TableMappingError(
            f"{meta.label} is swapped for {meta.swapped}: it has no table{where}. Pass "
            f"{meta.swapped} instead (for the user model, get_user_model())."
        )
    return meta.concrete_model or model


def _normalize(model: Model, overrides: Overrides) -> dict[str, TypeEngine[Any]]:
    names = {field.name for field in model._meta.local_concrete_fields}
    types: dict[str, TypeEngine[Any]] = {}
    for name, given in overrides.items():
        if name not in names:
            raise TableMappingError(
                f"overrides names {name!r}, which is not a field with a column of "
                f"{model._meta.label} (those are: {', '.join(sorted(names))})."
            )
        type_ = to_instance(given)
        if not isinstance(type_, TypeEngine):
            raise TableMappingError(
                f"overrides[{name!r}] for {model._meta.label} is {given!r}, not a SQLAlchemy "
                "type (such as sqlalchemy.String(100) or sqlalchemy.Text)."
            )
        types[name] = type_
    return types


def _signature(types: Mapping[str, TypeEngine[Any]]) -> frozenset[tuple[str, str]]:
    # Two fresh String(20) objects are the same override: compare class and arguments.
    return frozenset((name, f"{type(t).__module__}.{t!r}") for name, t in types.items())


def _describe(signature: frozenset[tuple[str, str]]) -> str:
    if not signature:
        return "no overrides"
    return "overrides {" + ", ".join(f"{n!r}: {r}" for n, r in sorted(signature)) + "}"


def _clear() -> None:
    """Forget every table (tests, a change of ``USE_TZ``); tables handed out keep working."""
    with state.lock:
        state.tables.clear()
        metadata.clear()


@receiver(setting_changed)
def _on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    # Datetime columns were built for the old USE_TZ.
    if setting == "USE_TZ":
        _clear()
