"""The one model of the app: :class:`ConnectionPool`, the admin's handle on the pools.

It has no table (``managed = False``) and no rows: the pools live in the
process, not in the database. It exists so that the admin lists "Connection
pools" on its index, that the permissions ``mingus_sessions.view_connectionpool``
and ``mingus_sessions.change_connectionpool`` exist to grant, and that admin log
entries of pool actions have a content type to point at. Nothing ever queries it.
"""

from __future__ import annotations

from django.db import models

__all__ = ["ConnectionPool"]


class ConnectionPool(models.Model):
    """A configured pool, by name; instances are built in memory and never saved."""

    name = models.CharField(max_length=200, primary_key=True)

    class Meta:
        managed = False
        verbose_name = "connection pool"
        verbose_name_plural = "connection pools"
        # Pools are configured in settings: there is nothing to add or delete.
        default_permissions = ("view", "change")

    def __str__(self) -> str:
        return self.name
