"""mingus_sessions.tables.table_for: SQLAlchemy Core tables for Django models."""

from __future__ import annotations

import datetime
import os
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection, models, transaction
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
    func,
    insert,
    literal,
    select,
    text,
    update,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import mysql, sqlite
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.schema import FetchedValue

from mingus_sessions import SessionError, session_scope
from mingus_sessions.tables import TableMappingError, _clear, metadata, table_for
from tests.helpers import admin_connection
from tests.testapp.models import (
    Author,
    AuthorProxy,
    Book,
    Extremes,
    Gadget,
    Profile,
    Tag,
    UpperCharField,
    WeirdField,
)

BACKEND = os.environ.get("MINGUS_TEST_DATABASE", "sqlite")

db = pytest.mark.django_db(transaction=True, databases=["default", "other"])

#: An aware datetime off UTC, with microseconds: the hard case for every backend.
KOLKATA = datetime.timezone(datetime.timedelta(hours=5, minutes=30))
PUBLISHED = datetime.datetime(2024, 3, 1, 9, 15, 30, 123456, tzinfo=KOLKATA)


@pytest.fixture(autouse=True)
def _fresh_tables() -> Iterator[None]:
    """Every test builds its tables anew (isolated test models reuse table names)."""
    _clear()
    yield
    _clear()


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


# -- Against the database ----------------------------------------------------------------------


#: Run a test in a plain session (a pool connection) and in a joined one (Django's connection).
both_sessions = pytest.mark.parametrize("joined", [False, True], ids=["plain", "joined"])


def _scope(joined: bool) -> Any:
    return session_scope(join_django=True) if joined else session_scope()


def _make_book(title: str = "Dune", **kwargs: Any) -> Book:
    values: dict[str, Any] = {
        "author": Author.objects.get_or_create(name="Frank Herbert")[0],
        "price": Decimal("19.99"),
        "published": PUBLISHED,
        "data": {"isbn": "0441013597", "tags": ["sf"]},
        "pages": 412,
    }
    values.update(kwargs)
    return Book.objects.create(title=title, **values)


@db
def test_core_join_sees_rows_written_by_the_orm() -> None:
    """A Core select joining two tables on their foreign key reads the ORM's committed rows."""
    first = _make_book("Dune")
    _make_book("Children of Dune", pages=None, data={})
    Author.objects.create(name="Nobody")
    book, author = table_for(Book), table_for(Author)
    query = (
        select(author.c.name, book.c.title, book.c.price, book.c.pages, book.c.data)
        .join_from(book, author)
        .order_by(book.c.title)
    )
    with session_scope() as session:
        rows = session.execute(query).all()
        dune = session.execute(select(book).where(book.c.id == first.pk)).one()
    assert [tuple(r) for r in rows] == [
        ("Frank Herbert", "Children of Dune", Decimal("19.99"), None, {}),
        ("Frank Herbert", "Dune", Decimal("19.99"), 412, {"isbn": "0441013597", "tags": ["sf"]}),
    ]
    assert dune.uuid == first.uuid
    assert dune.published == PUBLISHED
    assert dune.published.utcoffset() == datetime.timedelta(0)  # read back in UTC, like the ORM
    assert dune.added == first.added
    assert dune.flags is False


@db
@both_sessions
def test_insert_through_the_table_round_trips_through_the_orm(joined: bool) -> None:
    """Decimal, UUID, JSON and an aware datetime written by Core read back equal through the ORM."""
    author = Author.objects.create(name="Ursula K. Le Guin", born=datetime.date(1929, 10, 21))
    book = table_for(Book)
    key = uuid.UUID("12345678-1234-5678-1234-567812345678")
    data = {"awards": ["Hugo", "Nebula"], "score": 4.5, "nested": {"ok": True}, "none": None}
    with _scope(joined) as session:
        new_id = session.execute(
            insert(book)
            .values(
                title="The Dispossessed",
                author_id=author.pk,
                price=Decimal("12.50"),
                published=PUBLISHED,
                uuid=key,
                data=data,
                flags=True,
                notes="",
            )
            .returning(book.c.id)
        ).scalar_one()
    saved = Book.objects.get(pk=new_id)
    assert saved.price == Decimal("12.50")
    assert saved.uuid == key
    assert saved.data == data
    assert saved.published == PUBLISHED
    assert saved.flags is True
    assert saved.pages is None
    # Column defaults come from the model: auto_now_add.
    assert abs(saved.added - datetime.datetime.now(datetime.UTC)) < datetime.timedelta(minutes=5)
    # The ORM finds the row by the values Core wrote (stored as Django stores them).
    assert Book.objects.filter(published=PUBLISHED, uuid=key, price=Decimal("12.5")).count() == 1
    assert list(author.books.values_list("title", flat=True)) == ["The Dispossessed"]


@db
def test_model_defaults_fill_columns_left_out() -> None:
    """A Core insert that leaves columns out gets what the ORM would have written in them."""
    author = Author.objects.create(name="Iain M. Banks")
    book = table_for(Book)
    with session_scope() as session:
        session.execute(
            insert(book).values(
                title="Excession",
                author_id=author.pk,
                price=Decimal("9"),
                published=PUBLISHED,
            )
        )
    saved = Book.objects.get(title="Excession")
    assert isinstance(saved.uuid, uuid.UUID)
    assert saved.data == {}
    assert saved.flags is False
    assert saved.notes == ""  # what the ORM writes into a NOT NULL text field left unset


@db
@both_sessions
def test_every_type_reads_and_filters_like_the_orm(joined: bool) -> None:
    """Values written by the ORM read back equal through Core, and Core filters on them match."""
    author = Author.objects.create(name="Octavia E. Butler", born=datetime.date(1947, 6, 22))
    created = Profile.objects.create(
        author=author,
        website="https://example.com/ob",
        email="ob@example.com",
        ip="2001:db8::1",
        reading=datetime.timedelta(days=1, hours=2, microseconds=7),
        wakes=datetime.time(6, 30),
        score=4.25,
        avatar="avatars/ob.png",
        key=b"\x00\x01\xff",
        rank=-3,
        followers=2**40,
        stars=5,
        views=2**50,
    )
    profile = table_for(Profile)
    with _scope(joined) as session:
        row = session.execute(select(profile)).one()
        match = session.scalar(
            select(func.count())
            .select_from(profile)
            .where(
                profile.c.wakes == datetime.time(6, 30),
                profile.c.reading == datetime.timedelta(days=1, hours=2, microseconds=7),
                profile.c.updated == created.updated,
                profile.c.ip == "2001:db8::1",
            )
        )
        born = session.scalar(select(table_for(Author).c.born))
    assert match == 1
    assert born == datetime.date(1947, 6, 22)
    assert row.author_id == author.pk
    assert row.website == "https://example.com/ob"
    assert row.email == "ob@example.com"
    assert row.ip == "2001:db8::1"
    assert row.reading == datetime.timedelta(days=1, hours=2, microseconds=7)
    assert row.wakes == datetime.time(6, 30)
    assert row.score == 4.25
    assert row.avatar == "avatars/ob.png"
    assert bytes(row.key) == b"\x00\x01\xff"
    assert (row.rank, row.followers, row.stars, row.views) == (-3, 2**40, 5, 2**50)
    assert row.updated == created.updated


@db
def test_documented_report_and_bulk_insert() -> None:
    """The examples of docs/django-orm.md run: a bulk insert, then a grouped join on the FK."""
    le_guin = Author.objects.create(name="Le Guin")
    banks = Author.objects.create(name="Banks")
    incoming = [
        ("Lathe of Heaven", le_guin.pk, Decimal("10.00"), PUBLISHED),
        ("Tehanu", le_guin.pk, Decimal("5.50"), PUBLISHED),
        ("Matter", banks.pk, Decimal("7.25"), PUBLISHED),
        ("Old", banks.pk, Decimal("1.00"), datetime.datetime(2001, 1, 1, tzinfo=datetime.UTC)),
    ]
    rows = [
        {"title": title, "author_id": author_id, "price": price, "published": published}
        for title, author_id, price, published in incoming
    ]
    with session_scope() as session:
        session.execute(insert(table_for(Book)), rows)

    book, author = table_for(Book), table_for(Author)
    since = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
    query = (
        select(author.c.name, func.count(book.c.id).label("books"), func.sum(book.c.price))
        .join_from(book, author)
        .where(book.c.published >= since)
        .group_by(author.c.name)
        .order_by(author.c.name)
    )
    with session_scope("main") as session:
        report = [tuple(row) for row in session.execute(query)]
    assert report == [("Banks", 1, Decimal("7.25")), ("Le Guin", 2, Decimal("15.50"))]
    assert len({b.uuid for b in Book.objects.all()}) == 4


@db
@both_sessions
def test_update_through_the_table_applies_auto_now(joined: bool) -> None:
    """Core updates set auto_now columns, as Model.save() does; the ORM reads Core's values."""
    created = Profile.objects.create(author=Author.objects.create(name="Gene Wolfe"))
    before = created.updated
    time.sleep(0.01)
    profile = table_for(Profile)
    with _scope(joined) as session:
        session.execute(
            update(profile)
            .where(profile.c.id == created.pk)
            .values(reading=datetime.timedelta(minutes=90), wakes=datetime.time(23, 59, 1, 5))
        )
    created.refresh_from_db()
    assert created.reading == datetime.timedelta(minutes=90)
    assert created.wakes == datetime.time(23, 59, 1, 5)
    assert created.updated > before


@db
def test_many_to_many_rows_through_the_join_table() -> None:
    """Rows inserted into the auto-created join table are the ORM's many-to-many links."""
    dune = _make_book("Dune")
    sf = Tag.objects.create(name="sf")
    classic = Tag.objects.create(name="classic")
    through = table_for(Book.tags.through)
    with session_scope() as session:
        session.execute(
            insert(through),
            [{"book_id": dune.pk, "tag_id": sf.pk}, {"book_id": dune.pk, "tag_id": classic.pk}],
        )
    assert sorted(dune.tags.values_list("name", flat=True)) == ["classic", "sf"]


@db
def test_overridden_field_round_trips() -> None:
    """With overrides, a model with an unknown field type reads and writes through Core."""
    gadget = table_for(Gadget, overrides={"code": String(20)})
    owner = Author.objects.create(name="Stanisław Lem")
    Gadget.objects.create(code="orm", owner=owner)
    with session_scope() as session:
        session.execute(insert(gadget).values(code="core", owner_ref=owner.pk))
        codes = session.scalars(select(gadget.c.code).order_by(gadget.c.code)).all()
    assert codes == ["core", "orm"]
    assert sorted(Gadget.objects.values_list("code", flat=True)) == ["core", "orm"]


@db
def test_json_null_is_sql_null() -> None:
    """None in a JSON column is SQL NULL, as Django stores it, not the JSON null."""
    author = Author.objects.create(name="Connie Willis")
    book = table_for(Book)
    with pytest.raises(sa_exc.IntegrityError), session_scope() as s:
        s.execute(
            insert(book).values(
                title="Doomsday Book",
                author_id=author.pk,
                price=Decimal("1"),
                published=PUBLISHED,
                notes="",
                data=None,
            )
        )
    assert not Book.objects.exists()


@db
def test_a_joined_session_reads_what_a_plain_session_reads() -> None:
    """On Django's own connection (join_django=True) every mapped type reads back the same."""
    author = Author.objects.create(name="Tove Jansson", born=datetime.date(1914, 8, 9))
    _make_book("Moominsummer Madness", author=author)
    Profile.objects.create(
        author=author,
        ip="192.0.2.7",
        reading=datetime.timedelta(hours=3),
        wakes=datetime.time(7, 5, 0, 250),
        key=b"\x10",
        score=0.5,
    )
    tables = [table_for(model) for model in (Author, Book, Profile)]
    with session_scope() as session:
        plain = [[tuple(row) for row in session.execute(select(t)).all()] for t in tables]
    with transaction.atomic(), session_scope(join_django=True) as session:
        joined = [[tuple(row) for row in session.execute(select(t)).all()] for t in tables]
    assert joined == plain


@db
@pytest.mark.postgresql
def test_json_in_a_joined_session_is_decoded() -> None:
    """On Django's connection, where Django loads jsonb as text, JSON values are still decoded."""
    _make_book("Dune")
    book = table_for(Book)
    with session_scope() as session:
        own = session.scalar(select(book.c.data))
    with transaction.atomic(), session_scope(join_django=True) as session:
        joined = session.scalar(select(book.c.data))
        connection.ensure_connection()
    assert own == {"isbn": "0441013597", "tags": ["sf"]}
    assert joined == own


#: The smallest and the largest value of SmallIntegerField, IntegerField and BigIntegerField.
INTEGER_EDGES = [(-(2**15), -(2**31), -(2**63)), (2**15 - 1, 2**31 - 1, 2**63 - 1)]


@db
@both_sessions
def test_integer_edges_round_trip(joined: bool) -> None:
    """Each integer size's smallest and largest values are written, matched and read back."""
    extremes = table_for(Extremes)
    small, regular, big = extremes.c.small, extremes.c.regular, extremes.c.big
    lowest = INTEGER_EDGES[0]
    rows = [{"small": s, "regular": r, "big": b} for s, r, b in INTEGER_EDGES]
    with _scope(joined) as session:
        session.execute(insert(extremes), rows)
        read = [tuple(row) for row in session.execute(select(small, regular, big).order_by(small))]
        matched = session.scalar(
            select(func.count())
            .select_from(extremes)
            .where(small == lowest[0], regular == lowest[1], big == lowest[2])
        )
        bound = session.execute(
            select(
                literal(lowest[0], SmallInteger()),
                literal(lowest[1], Integer()),
                literal(lowest[2], BigInteger()),
            )
        ).one()
    assert read == INTEGER_EDGES
    assert matched == 1
    assert tuple(bound) == lowest
    assert sorted(Extremes.objects.values_list("small", "regular", "big")) == INTEGER_EDGES
    assert Extremes.objects.filter(small=lowest[0], regular=lowest[1], big=lowest[2]).exists()


@contextmanager
def _django_hstore_adapters(registered: bool) -> Iterator[None]:
    """Django's connection with its hstore adapters (django.contrib.postgres) or without them."""
    from django.contrib.postgres.signals import register_type_handlers
    from django.db.backends.signals import connection_created

    connection.close()  # the next use connects anew, with or without the adapters
    if not registered:
        connection_created.disconnect(register_type_handlers)
    try:
        yield
    finally:
        if not registered:
            connection_created.connect(register_type_handlers)
            connection.close()


@db
@pytest.mark.postgresql
@pytest.mark.parametrize("registered", [True, False], ids=["django-adapters", "no-adapters"])
def test_hstore_override_in_plain_and_joined_sessions(registered: bool) -> None:
    """The documented HSTORE override writes and reads dicts in plain and joined sessions alike.

    Whether Django registered its hstore adapters on its connection (values
    load as dicts) or not (they load as text).
    """
    from tests.pgapp.models import Labelled

    labelled = table_for(Labelled, overrides={"labels": pg.HSTORE})
    Labelled.objects.create(labels={"by": "orm", "size": "L"})
    with _django_hstore_adapters(registered):
        with connection.cursor() as cursor:
            cursor.execute("SELECT labels FROM pgapp_labelled")
            (loaded,) = cursor.fetchone()
        assert isinstance(loaded, dict if registered else str)
        with session_scope() as session:
            session.execute(insert(labelled).values(labels={"by": "plain"}))
            plain = sorted(session.scalars(select(labelled.c.labels)), key=str)
        with transaction.atomic(), session_scope(join_django=True) as session:
            session.execute(insert(labelled).values(labels={"by": "joined", "empty": None}))
            joined = sorted(session.scalars(select(labelled.c.labels)), key=str)
            found = session.scalar(
                select(func.count()).select_from(labelled).where(labelled.c.labels.has_key("empty"))
            )
    assert plain == [{"by": "orm", "size": "L"}, {"by": "plain"}]
    assert joined == [{"by": "joined", "empty": None}, *plain]
    assert found == 1
    assert sorted((row.labels for row in Labelled.objects.all()), key=str) == joined


# -- Time zones (PostgreSQL returns timestamptz values in the session's time zone) -------------

#: A server default off UTC, as a cluster configured for local time has.
SERVER_TIME_ZONE = "America/New_York"


def _alter_test_database(setting: str) -> None:
    with admin_connection() as admin:
        admin.execute(f'ALTER DATABASE "{connection.settings_dict["NAME"]}" {setting}')


@pytest.fixture
def server_time_zone_off_utc() -> Iterator[None]:
    """The test database's default time zone is America/New_York for new connections."""
    from mingus_sessions.engines import dispose_engines

    _alter_test_database(f"SET timezone TO '{SERVER_TIME_ZONE}'")
    connection.close()
    dispose_engines()
    try:
        yield
    finally:
        _alter_test_database("RESET timezone")
        connection.close()
        dispose_engines()


def _server_default_time_zone() -> str:
    with admin_connection(str(connection.settings_dict["NAME"])) as raw:
        return str(raw.info.parameter_status("TimeZone"))


@pytest.mark.parametrize(("use_tz", "expected"), [(True, "UTC"), (False, "Asia/Kolkata")])
def test_pools_take_the_time_zone_of_djangos_connection(use_tz: bool, expected: str) -> None:
    """Engines are built for the time zone Django's own connection runs in."""
    from mingus_sessions.conf import database_time_zone
    from mingus_sessions.engines import get_entry

    with override_settings(USE_TZ=use_tz, TIME_ZONE="Asia/Kolkata"):
        assert database_time_zone("default") == expected == connection.timezone_name
        expected_in_spec = expected if connection.vendor == "postgresql" else None
        assert get_entry("main").spec.time_zone == expected_in_spec


@db
@pytest.mark.postgresql
def test_datetimes_read_in_utc_whatever_the_servers_time_zone(
    server_time_zone_off_utc: None,
) -> None:
    """Plain and joined sessions read the same aware UTC datetimes as the ORM, server zone aside."""
    assert _server_default_time_zone() == SERVER_TIME_ZONE
    _make_book("Dune")
    published = table_for(Book).c.published
    raw = text("SELECT published FROM testapp_book")
    with session_scope() as session:
        plain = [session.scalar(select(published)), session.scalar(raw)]
        session_zone = session.scalar(text("SHOW TIME ZONE"))
    with transaction.atomic(), session_scope(join_django=True) as session:
        joined = [session.scalar(select(published)), session.scalar(raw)]
    orm = Book.objects.get().published
    assert session_zone == "UTC"
    for value in [*plain, *joined, orm]:
        assert value == PUBLISHED
        assert value.utcoffset() == datetime.timedelta(0)
    assert {str(value) for value in [*plain, *joined, orm]} == {str(orm)}


@db
@pytest.mark.postgresql
def test_a_server_already_in_utc_under_another_name_gets_no_set() -> None:
    """A server reporting "Etc/UTC" already runs in Django's "UTC": new connections are left
    as they are, with no SET (and its commit) at every connect."""
    from mingus_sessions.engines import dispose_engines

    _alter_test_database("SET timezone TO 'Etc/UTC'")
    dispose_engines()
    try:
        _make_book("Dune")
        with session_scope() as session:
            assert session.scalar(text("SHOW TIME ZONE")) == "Etc/UTC"
            value = session.scalar(select(table_for(Book).c.published))
        assert value == PUBLISHED
        assert value.utcoffset() == datetime.timedelta(0)
    finally:
        _alter_test_database("RESET timezone")
        dispose_engines()


@db
@pytest.mark.postgresql
def test_without_use_tz_datetimes_read_naive_in_time_zone(server_time_zone_off_utc: None) -> None:
    """With USE_TZ = False, plain sessions run in TIME_ZONE and read the ORM's naive wall time."""
    wall_time = datetime.datetime(2024, 3, 1, 9, 15, 30, 123456)
    with override_settings(USE_TZ=False, TIME_ZONE="Asia/Kolkata"):
        connection.close()  # Django sets its adapters up for USE_TZ when it connects
        _make_book("Dune", published=wall_time)
        published = table_for(Book).c.published
        raw = text("SELECT published FROM testapp_book")
        with session_scope() as session:
            plain, plain_raw = session.scalar(select(published)), session.scalar(raw)
        with transaction.atomic(), session_scope(join_django=True) as session:
            joined, joined_raw = session.scalar(select(published)), session.scalar(raw)
        orm = Book.objects.get().published
        connection.close()
    assert plain == joined == orm == joined_raw == wall_time
    # psycopg's own loader reads it aware, in the session's time zone: TIME_ZONE.
    assert plain_raw.replace(tzinfo=None) == wall_time
    assert plain_raw.utcoffset() == datetime.timedelta(hours=5, minutes=30)
