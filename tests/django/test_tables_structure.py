"""mingus_sessions.tables.table_for: the Core tables it builds for Django models, what it
refuses, and its overrides."""

from __future__ import annotations

import datetime
import threading
from typing import Any

import pytest
from django.db import models
from django.test.utils import isolate_apps, override_settings
from django.utils import timezone
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
    Table,
    Text,
    Time,
    Uuid,
)
from sqlalchemy.dialects import mysql, sqlite
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.schema import FetchedValue

from mingus_sessions import SessionError
from mingus_sessions.tables import TableMappingError, metadata, table_for
from tests.django.helpers import PUBLISHED
from tests.testapp.models import (
    Author,
    AuthorProxy,
    Book,
    Gadget,
    Profile,
    Tag,
    UpperCharField,
    WeirdField,
)

#: Every test builds its tables anew (tests/django/conftest.py).
pytestmark = pytest.mark.usefixtures("fresh_tables")


def _columns(table: Table) -> dict[str, Any]:
    return {column.name: column for column in table.columns}


# -- Structure ---------------------------------------------------------------------------------


def test_book_table_matches_the_model() -> None:
    """Columns, names, nullability, primary key and uniqueness follow the model's fields."""
    book = table_for(Book)
    assert book.name == "testapp_book"
    assert book.metadata is metadata
    assert list(book.c.keys()) == [f.column for f in Book._meta.local_concrete_fields]
    assert "tags" not in book.c  # many-to-many: no column
    columns = _columns(book)
    assert [c.name for c in book.primary_key.columns] == ["id"]
    assert isinstance(columns["id"].type, BigInteger)
    assert columns["id"].autoincrement is True
    assert isinstance(columns["title"].type, String)  # UpperCharField, a CharField subclass
    assert columns["title"].type.length == 200
    assert isinstance(columns["price"].type, Numeric)
    assert (columns["price"].type.precision, columns["price"].type.scale) == (8, 2)
    assert isinstance(columns["uuid"].type, Uuid)
    assert isinstance(columns["data"].type, JSON)
    assert isinstance(columns["flags"].type, Boolean)
    assert isinstance(columns["pages"].type, Integer)
    assert isinstance(columns["notes"].type, Text)
    assert columns["published"].type.timezone is True  # USE_TZ = True in tests.settings
    nullable = {name for name, column in columns.items() if column.nullable}
    assert nullable == {"pages"}
    unique = {name for name, column in columns.items() if column.unique}
    assert unique == {"uuid"}


def test_every_builtin_type_is_mapped() -> None:
    """Each common Django field type gets the SQLAlchemy type of the documented table."""
    columns = _columns(table_for(Profile))
    expected: dict[str, tuple[type[Any], int | None]] = {
        "website": (String, 200),
        "email": (String, 254),
        "ip": (String, 39),
        "score": (Float, None),
        "avatar": (String, 100),
        "key": (LargeBinary, None),
        "rank": (SmallInteger, None),
        "followers": (BigInteger, None),
        "stars": (SmallInteger, None),
        "views": (BigInteger, None),
    }
    for name, (type_, length) in expected.items():
        column_type = getattr(columns[name].type, "impl", columns[name].type)
        assert isinstance(column_type, type_), name
        if length is not None:
            assert column_type.length == length, name
    # Types that must store values as Django does are decorators over these.
    for name, type_ in (("reading", Interval), ("wakes", Time), ("updated", DateTime)):
        assert isinstance(columns[name].type.impl, type_), name
    assert isinstance(_columns(table_for(Author))["born"].type.impl, Date)
    assert isinstance(_columns(table_for(Tag))["name"].type, String)  # SlugField
    assert isinstance(
        _columns(table_for(Gadget, overrides={"code": String(20)}))["id"].type, SmallInteger
    )


def test_foreign_keys_refer_to_the_target_tables() -> None:
    """A ForeignKey becomes a column of the target's type with a FOREIGN KEY to its table."""
    book = table_for(Book)
    author = table_for(Author)
    (fk,) = book.c.author_id.foreign_keys
    assert fk.column is author.c.id
    assert isinstance(book.c.author_id.type, BigInteger)
    assert book.c.author_id.autoincrement is False
    assert not book.c.author_id.nullable
    profile = table_for(Profile)
    assert profile.c.author_id.unique  # OneToOneField
    (pfk,) = profile.c.author_id.foreign_keys
    assert pfk.column is author.c.id
    gadget = table_for(Gadget, overrides={"code": String(20)})
    (gfk,) = gadget.c.owner_ref.foreign_keys  # db_column
    assert gfk.column is author.c.id
    assert gadget.c.owner_ref.nullable


def test_building_a_table_builds_the_tables_it_refers_to() -> None:
    """The target of a foreign key is built on the same MetaData, and cached for later calls."""
    book = table_for(Book)
    assert "testapp_author" in metadata.tables
    (fk,) = book.c.author_id.foreign_keys
    assert table_for(Author) is fk.column.table


def test_auto_created_many_to_many_table() -> None:
    """The through model of a ManyToManyField maps to its join table with two foreign keys."""
    through = table_for(Book.tags.through)
    assert through.name == "testapp_book_tags"
    assert set(through.c.keys()) == {"id", "book_id", "tag_id"}
    targets = {fk.column.table.name for fk in through.foreign_keys}
    assert targets == {"testapp_book", "testapp_tag"}


def test_the_same_table_object_every_time() -> None:
    """table_for() caches on one MetaData: the same model always gives the same Table."""
    first = table_for(Book)
    assert table_for(Book) is first
    assert metadata.tables["testapp_book"] is first


def test_concurrent_first_calls_build_one_table() -> None:
    """Threads racing to build a table all get the same object."""
    results: list[Table] = []
    barrier = threading.Barrier(8)

    def build() -> None:
        barrier.wait()
        results.append(table_for(Profile))

    threads = [threading.Thread(target=build) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 8
    assert all(table is results[0] for table in results)


def test_proxy_model_maps_to_its_concrete_table() -> None:
    """A proxy model gives its concrete model's Table."""
    assert table_for(AuthorProxy) is table_for(Author)
    assert table_for(Author) is table_for(AuthorProxy)


@isolate_apps("tests.testapp")
def test_abstract_model_is_refused() -> None:
    """An abstract model has no table: a TableMappingError says to pass a concrete subclass."""

    class Base(models.Model):
        class Meta:
            app_label = "testapp"
            abstract = True

    with pytest.raises(TableMappingError) as info:
        table_for(Base)
    assert str(info.value) == (
        "testapp.Base is abstract: it has no table. Pass one of its concrete subclasses "
        "to table_for()."
    )
    assert isinstance(info.value, SessionError)
    assert isinstance(info.value, TypeError)


@isolate_apps("tests.testapp")
def test_swapped_model_is_refused() -> None:
    """A swapped-out model has no table: the error names its replacement."""

    class Member(models.Model):  # noqa: DJ008
        class Meta:
            app_label = "testapp"
            swappable = "TABLES_TEST_MEMBER_MODEL"

    with (
        override_settings(TABLES_TEST_MEMBER_MODEL="testapp.Author"),
        pytest.raises(TableMappingError, match=r"^testapp.Member is swapped for testapp.Author"),
    ):
        table_for(Member)


def test_not_a_model_is_refused() -> None:
    """Anything but a model class is a TableMappingError (a TypeError)."""
    with pytest.raises(TypeError, match=r"takes a Django model class, not <Author: x>"):
        table_for(Author(name="x"))  # type: ignore[arg-type]


@isolate_apps("tests.testapp")
def test_unmanaged_model_uses_its_db_table() -> None:
    """An unmanaged model maps to its db_table like any other."""

    class Legacy(models.Model):  # noqa: DJ008
        code = models.CharField(max_length=10, primary_key=True)

        class Meta:
            app_label = "testapp"
            managed = False
            db_table = "legacy_codes"

    table = table_for(Legacy)
    assert table.name == "legacy_codes"
    assert table.c.code.primary_key
    assert table.c.code.autoincrement is False


@isolate_apps("tests.testapp")
def test_inheritance_self_reference_and_composite_keys() -> None:
    """Multi-table children, self references, cycles, to_field and composite keys map."""

    class Place(models.Model):  # noqa: DJ008
        code = models.CharField(max_length=10, unique=True)
        parent = models.ForeignKey("self", null=True, on_delete=models.CASCADE)
        best = models.ForeignKey("Shop", null=True, on_delete=models.SET_NULL, related_name="+")

        class Meta:
            app_label = "testapp"

    class Shop(Place):  # noqa: DJ008
        opens = models.TimeField()

        class Meta:
            app_label = "testapp"

    class Visit(models.Model):  # noqa: DJ008
        place = models.ForeignKey(Place, to_field="code", on_delete=models.CASCADE)

        class Meta:
            app_label = "testapp"

    class Stock(models.Model):  # noqa: DJ008
        pk = models.CompositePrimaryKey("shop", "sku")
        shop = models.ForeignKey(Shop, on_delete=models.CASCADE)
        sku = models.CharField(max_length=20)

        class Meta:
            app_label = "testapp"

    stock = table_for(Stock)
    shop = table_for(Shop)
    place = table_for(Place)
    assert list(shop.c.keys()) == ["place_ptr_id", "opens"]
    assert [c.name for c in shop.primary_key] == ["place_ptr_id"]
    assert next(iter(shop.c.place_ptr_id.foreign_keys)).column is place.c.id
    assert isinstance(shop.c.place_ptr_id.type, BigInteger)
    assert next(iter(place.c.parent_id.foreign_keys)).column is place.c.id
    assert next(iter(place.c.best_id.foreign_keys)).column is shop.c.place_ptr_id
    visit = table_for(Visit)
    assert next(iter(visit.c.place_id.foreign_keys)).column is place.c.code  # to_field
    assert visit.c.place_id.type is place.c.code.type
    assert [c.name for c in stock.primary_key] == ["shop_id", "sku"]
    assert not stock.c.shop_id.nullable


@isolate_apps("tests.testapp")
def test_server_side_values_are_marked() -> None:
    """db_default and GeneratedField columns carry a FetchedValue; Django defaults are applied."""

    class Line(models.Model):  # noqa: DJ008
        qty = models.IntegerField(db_default=1)
        price = models.IntegerField(default=3)
        total = models.GeneratedField(
            expression=models.F("qty") * models.F("price"),
            output_field=models.BigIntegerField(),
            db_persist=True,
        )

        class Meta:
            app_label = "testapp"

    table = table_for(Line)
    assert isinstance(table.c.qty.server_default, FetchedValue)
    assert isinstance(table.c.total.server_default, FetchedValue)
    assert isinstance(table.c.total.type, BigInteger)
    assert table.c.price.default is not None
    assert table.c.price.default.arg(None) == 3


def test_use_tz_is_read_when_the_table_is_built() -> None:
    """With USE_TZ off, datetime columns are naive; changing USE_TZ forgets built tables."""
    aware = table_for(Book)
    with override_settings(USE_TZ=False):
        naive = table_for(Book)
        assert naive is not aware
        assert naive.c.published.type.timezone is False
    assert table_for(Book).c.published.type.timezone is True


@isolate_apps("tests.testapp")
def test_one_table_name_maps_once() -> None:
    """A second model over a db_table already mapped is refused, naming the first."""

    class Codes(models.Model):  # noqa: DJ008
        class Meta:
            app_label = "testapp"
            db_table = "shared_codes"

    class CodesAgain(models.Model):  # noqa: DJ008
        class Meta:
            app_label = "testapp"
            db_table = "shared_codes"
            managed = False

    table_for(Codes)
    with pytest.raises(TableMappingError) as info:
        table_for(CodesAgain)
    assert str(info.value) == (
        'testapp.CodesAgain uses the table "shared_codes", which testapp.Codes already maps '
        "on mingus_sessions.tables.metadata: a table name can be mapped once."
    )


@isolate_apps("tests.testapp")
def test_auto_now_defaults_by_field_type() -> None:
    """auto_now_add and auto_now become column defaults (and onupdate) of the right kind."""

    class Stamp(models.Model):  # noqa: DJ008
        day = models.DateField(auto_now_add=True)
        at = models.TimeField(auto_now=True)
        moment = models.DateTimeField(auto_now=True)

        class Meta:
            app_label = "testapp"

    table = table_for(Stamp)
    assert isinstance(table.c.day.default.arg(None), datetime.date)
    assert table.c.day.onupdate is None
    assert isinstance(table.c.at.default.arg(None), datetime.time)
    assert isinstance(table.c.at.onupdate.arg(None), datetime.time)
    assert timezone.is_aware(table.c.moment.onupdate.arg(None))


def test_datetimes_are_bound_as_django_binds_them() -> None:
    """Naive values mean TIME_ZONE; aware ones become UTC where the column has no zone."""
    sqlite_dialect, mysql_dialect, pg_dialect = sqlite.dialect(), mysql.dialect(), pg.dialect()
    aware_type = table_for(Book).c.published.type
    naive = datetime.datetime(2024, 3, 1, 9, 15)
    with override_settings(TIME_ZONE="Asia/Kolkata"):
        assert aware_type.process_bind_param(naive, sqlite_dialect) == "2024-03-01 03:45:00"
        assert aware_type.process_bind_param(PUBLISHED, mysql_dialect) == datetime.datetime(
            2024, 3, 1, 3, 45, 30, 123456
        )
        assert aware_type.process_bind_param(PUBLISHED, pg_dialect) is PUBLISHED
        assert aware_type.process_bind_param(None, sqlite_dialect) is None
        with override_settings(USE_TZ=False):
            naive_type = table_for(Book).c.published.type
            assert naive_type.process_bind_param(naive, sqlite_dialect) == "2024-03-01 09:15:00"
            with pytest.raises(ValueError, match="sqlite does not support timezone-aware"):
                naive_type.process_bind_param(PUBLISHED, sqlite_dialect)
            # PostgreSQL returns timestamptz values aware: Django's wall time is TIME_ZONE's.
            assert naive_type.process_result_value(PUBLISHED, pg_dialect) == naive.replace(
                second=30, microsecond=123456
            )
    date_type = table_for(Author).c.born.type
    assert date_type.process_bind_param(None, sqlite_dialect) is None
    assert date_type.process_bind_param(datetime.date(2024, 1, 2), sqlite_dialect) == "2024-01-02"


# -- Unsupported fields and overrides ----------------------------------------------------------


def test_unsupported_field_says_how_to_proceed() -> None:
    """A field of unknown type is refused with its model, field, type and the overrides fix."""
    with pytest.raises(TableMappingError) as info:
        table_for(Gadget)
    assert str(info.value) == (
        "testapp.Gadget.code is a WeirdField (tests.testapp.models.WeirdField), which "
        "table_for() has no SQLAlchemy type for. Give it one: table_for(Gadget, "
        'overrides={"code": <a sqlalchemy type that matches the column, e.g. '
        "sqlalchemy.String(100)>})."
    )
    # Nothing half-built stays behind, not even the Author table built on the way.
    assert "testapp_gadget" not in metadata.tables
    assert "testapp_author" not in metadata.tables


@isolate_apps("tests.testapp")
def test_unsupported_target_names_the_referring_field() -> None:
    """When the unknown field is in a referenced model, the error says to map that model first."""

    class Token(models.Model):  # noqa: DJ008
        code = WeirdField(primary_key=True)

        class Meta:
            app_label = "testapp"

    class Use(models.Model):  # noqa: DJ008
        token = models.ForeignKey(Token, on_delete=models.CASCADE)

        class Meta:
            app_label = "testapp"

    with pytest.raises(TableMappingError, match=r"\.$") as info:
        table_for(Use)
    assert str(info.value).endswith(
        "testapp.Token is mapped because testapp.Use.token refers to it: call "
        "table_for(Token, overrides=...) first."
    )
    token = table_for(Token, overrides={"code": String(20)})
    use = table_for(Use)
    assert use.c.token_id.type is token.c.code.type
    assert next(iter(use.c.token_id.foreign_keys)).column is token.c.code


def test_overrides_are_fixed_by_the_first_call() -> None:
    """Equal overrides or none give the cached table; different ones raise, never surprise."""
    gadget = table_for(Gadget, overrides={"code": String(20)})
    assert isinstance(gadget.c.code.type, String)
    assert table_for(Gadget, overrides={"code": String(20)}) is gadget
    assert table_for(Gadget) is gadget
    table_for(Book)
    with pytest.raises(
        TableMappingError,
        match=r"^The table of testapp.Book was already built "
        r"with no overrides, not overrides \{'notes': ",
    ):
        table_for(Book, overrides={"notes": String()})
    with pytest.raises(TableMappingError) as info:
        table_for(Gadget, overrides={"code": Text()})
    assert str(info.value) == (
        "The table of testapp.Gadget was already built with overrides "
        "{'code': sqlalchemy.sql.sqltypes.String(length=20)}, not overrides "
        "{'code': sqlalchemy.sql.sqltypes.Text()}. Pass the same overrides on every call, "
        "and call table_for(Gadget, overrides=...) before building any table that refers to it."
    )


def test_overrides_replace_builtin_choices_and_accept_classes() -> None:
    """An override may replace a built-in mapping, given as a type or a type class."""
    book = table_for(Book, overrides={"notes": String, "title": Text()})
    assert type(book.c.notes.type) is String
    assert type(book.c.title.type) is Text


def test_overrides_must_name_fields_and_types() -> None:
    """An override for an unknown field, or one that is not a type, is refused."""
    with pytest.raises(TableMappingError, match=r"^overrides names 'author_id', which is not"):
        table_for(Book, overrides={"author_id": Integer()})
    with pytest.raises(TableMappingError, match=r"is 'varchar\(20\)', not a SQLAlchemy type"):
        table_for(Gadget, overrides={"code": "varchar(20)"})  # type: ignore[dict-item]


def test_subclass_of_a_builtin_field_is_mapped_by_internal_type() -> None:
    """Custom subclasses of built-in fields map through get_internal_type()."""
    assert UpperCharField(max_length=5).get_internal_type() == "CharField"
    assert isinstance(table_for(Book).c.title.type, String)
