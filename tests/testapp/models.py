"""Models the suite writes through the ORM and reads through SQLAlchemy."""

from __future__ import annotations

from django.db import models


class Note(models.Model):
    title = models.CharField(max_length=100, unique=True)
    body = models.TextField(default="")

    class Meta:
        app_label = "testapp"

    def __str__(self) -> str:
        return self.title
