"""PostgreSQL-only models: fields of django.contrib.postgres that table_for maps by override."""

from __future__ import annotations

from django.contrib.postgres.fields import HStoreField
from django.db import models


class Labelled(models.Model):
    labels = HStoreField(default=dict)

    class Meta:
        app_label = "pgapp"

    def __str__(self) -> str:
        return str(self.labels)
