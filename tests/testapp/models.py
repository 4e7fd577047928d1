"""Models the suite writes through the ORM and reads through SQLAlchemy."""

from __future__ import annotations

import uuid

from django.db import models


class Note(models.Model):
    title = models.CharField(max_length=100, unique=True)
    body = models.TextField(default="")

    class Meta:
        app_label = "testapp"

    def __str__(self) -> str:
        return self.title


# -- Models for tests/django/test_tables_*.py (mingus_sessions.tables.table_for) --


class UpperCharField(models.CharField):  # type: ignore[type-arg]
    """A subclass of a built-in field: table_for() maps it by get_internal_type()."""


class WeirdField(models.Field):  # type: ignore[type-arg]
    """A field type table_for() has no mapping for (stored as varchar(20))."""

    def get_internal_type(self) -> str:
        return "WeirdField"

    def db_type(self, connection: object) -> str:
        return "varchar(20)"


class Author(models.Model):
    name = models.CharField(max_length=100, unique=True)
    born = models.DateField(null=True)

    class Meta:
        app_label = "testapp"

    def __str__(self) -> str:
        return self.name


class AuthorProxy(Author):
    class Meta:
        app_label = "testapp"
        proxy = True


class Tag(models.Model):
    name = models.SlugField(max_length=50, unique=True)

    class Meta:
        app_label = "testapp"

    def __str__(self) -> str:
        return self.name


class Book(models.Model):
    title = UpperCharField(max_length=200)
    author = models.ForeignKey(Author, on_delete=models.CASCADE, related_name="books")
    price = models.DecimalField(max_digits=8, decimal_places=2)
    published = models.DateTimeField()
    uuid = models.UUIDField(default=uuid.uuid4, unique=True)
    data = models.JSONField(default=dict)
    flags = models.BooleanField(default=False)
    pages = models.PositiveIntegerField(null=True)
    notes = models.TextField(blank=True)
    added = models.DateTimeField(auto_now_add=True)
    tags = models.ManyToManyField(Tag, blank=True, related_name="books")

    class Meta:
        app_label = "testapp"

    def __str__(self) -> str:
        return str(self.title)


class Profile(models.Model):
    author = models.OneToOneField(Author, on_delete=models.CASCADE, related_name="profile")
    website = models.URLField(blank=True)
    email = models.EmailField(blank=True)
    ip = models.GenericIPAddressField(null=True)
    reading = models.DurationField(null=True)
    wakes = models.TimeField(null=True)
    score = models.FloatField(null=True)
    avatar = models.FileField(upload_to="avatars/", blank=True)
    key = models.BinaryField(null=True)
    rank = models.SmallIntegerField(default=0)
    followers = models.BigIntegerField(null=True)
    stars = models.PositiveSmallIntegerField(default=0)
    views = models.PositiveBigIntegerField(default=0)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        app_label = "testapp"

    def __str__(self) -> str:
        return f"profile of {self.author_id}"


class Gadget(models.Model):
    id = models.SmallAutoField(primary_key=True)
    code = WeirdField(unique=True)
    owner = models.ForeignKey(
        Author, null=True, on_delete=models.SET_NULL, db_column="owner_ref", related_name="+"
    )

    class Meta:
        app_label = "testapp"

    def __str__(self) -> str:
        return str(self.code)


class Extremes(models.Model):
    """An integer column of each size, for the smallest and largest values they hold."""

    small = models.SmallIntegerField()
    regular = models.IntegerField()
    big = models.BigIntegerField()

    class Meta:
        app_label = "testapp"

    def __str__(self) -> str:
        return f"{self.small}, {self.regular}, {self.big}"
