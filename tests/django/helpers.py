"""What the table tests share."""

from __future__ import annotations

import datetime

#: An aware datetime off UTC, with microseconds: the hard case for every backend.
KOLKATA = datetime.timezone(datetime.timedelta(hours=5, minutes=30))

PUBLISHED = datetime.datetime(2024, 3, 1, 9, 15, 30, 123456, tzinfo=KOLKATA)
