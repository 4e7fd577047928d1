"""SQLAlchemy Core ``Table`` objects for the demo's models, from ``table_for``.

Each accessor returns ``mingus_sessions.tables.table_for(Model)``: the table is
built from the model on the first call (after the app registry is ready) and
cached, so later calls cost a dictionary lookup. They are functions, not
module-level tables, because building a table reads the models' ``_meta`` and
``settings.USE_TZ``, which must not happen while this module is imported.

Django's migrations own these tables; the ``Table`` objects are for queries and
writes, never for ``create_all``. Their types store values as Django does
(aware UTC datetimes, Django's text formats on SQLite), so rows written here
read back equal through the ORM and the other way round.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from sqlalchemy import Table

from mingus_sessions.tables import table_for

from .models import CommunicationMetrics, CommunicationPreferences, UserEngagementMetrics

__all__ = [
    "auth_user",
    "communication_metrics",
    "communication_preferences",
    "user_engagement_metrics",
]


def auth_user() -> Table:
    """The user model's table (``auth_user`` unless ``AUTH_USER_MODEL`` swaps it)."""
    # get_user_model(), not auth.User: table_for refuses a swapped model.
    return table_for(get_user_model())


def communication_preferences() -> Table:
    """The table of :class:`~.models.CommunicationPreferences`."""
    return table_for(CommunicationPreferences)


def communication_metrics() -> Table:
    """The table of :class:`~.models.CommunicationMetrics` (one row per communication)."""
    return table_for(CommunicationMetrics)


def user_engagement_metrics() -> Table:
    """The table of :class:`~.models.UserEngagementMetrics`."""
    return table_for(UserEngagementMetrics)
