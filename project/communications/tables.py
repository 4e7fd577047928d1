"""SQLAlchemy Core ``Table`` objects for the tables the Django models in :mod:`.models` own.

Django creates and migrates these tables; SQLAlchemy only queries them, so this
metadata is never used for ``create_all``. Column names are the Django models'
database columns. (When ``mingus_sessions.tables.table_for`` exists, it can
replace these declarations.)

``auth_user`` is declared with the two columns the demo reads, and assumes the
default user model.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Time,
)

metadata = MetaData()

auth_user = Table(
    "auth_user",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("username", String(150), nullable=False),
)

communication_preferences = Table(
    "communications_communicationpreferences",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("user_id", Integer, ForeignKey("auth_user.id"), nullable=False, unique=True),
    Column("sms_enabled", Boolean, nullable=False),
    Column("email_enabled", Boolean, nullable=False),
    Column("quiet_hours_start", Time, nullable=True),
    Column("quiet_hours_end", Time, nullable=True),
    Column("last_sms_sent", DateTime(timezone=True), nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

communication_metrics = Table(
    "communications_communicationmetrics",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("user_id", Integer, ForeignKey("auth_user.id"), nullable=False),
    Column("message_type", String(50), nullable=False),
    Column("channel", String(10), nullable=False),
    Column("status", String(10), nullable=False),
    Column("sent_at", DateTime(timezone=True), nullable=False),
    Column("idempotency_key", String(100), nullable=True, unique=True),
)

user_engagement_metrics = Table(
    "communications_userengagementmetrics",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("user_id", Integer, ForeignKey("auth_user.id"), nullable=False, unique=True),
    Column("total_communications", Integer, nullable=False),
    Column("last_activity", DateTime(timezone=True), nullable=True),
    Column("engagement_score", Float, nullable=False),
)
