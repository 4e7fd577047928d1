"""mingus_sessions.tables.table_for against the database: rows written and read through the
tables and the ORM alike, in plain and joined sessions, and in the server's time zone."""

from __future__ import annotations

import datetime
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection, transaction
from django.test.utils import override_settings
from sqlalchemy import (
    BigInteger,
    Integer,
    SmallInteger,
    String,
    func,
    insert,
    literal,
    select,
    text,
    update,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql as pg

from mingus_sessions import session_scope
from mingus_sessions.tables import table_for
from tests.django.helpers import PUBLISHED
from tests.helpers import admin_connection
from tests.testapp.models import Author, Book, Extremes, Gadget, Profile, Tag

#: Every test builds its tables anew (tests/django/conftest.py).
pytestmark = pytest.mark.usefixtures("fresh_tables")

db = pytest.mark.django_db(transaction=True, databases=["default", "other"])


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
