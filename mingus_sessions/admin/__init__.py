"""The Django admin's "Connection pools": a dashboard of the pools and the fleet, and actions.

Django's admin autodiscovery imports this package, which registers
:class:`~mingus_sessions.admin.options.ConnectionPoolAdmin` for the unmanaged
:class:`~mingus_sessions.models.ConnectionPool` on the default admin site. A
project with its own ``AdminSite`` registers the same pair on it::

    from mingus_sessions.admin.options import ConnectionPoolAdmin
    from mingus_sessions.models import ConnectionPool

    my_site.register(ConnectionPool, ConnectionPoolAdmin)

See docs/operations.md.
"""

from __future__ import annotations

from django.contrib import admin

from ..models import ConnectionPool
from .options import ConnectionPoolAdmin

__all__ = ["ConnectionPoolAdmin"]

admin.site.register(ConnectionPool, ConnectionPoolAdmin)
