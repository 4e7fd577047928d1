"""A Celery app with one database task, for the worker that tests/fleet starts.

Started as ``python -m celery -A tests.fleet.celery_fleet worker`` with
``DJANGO_SETTINGS_MODULE=tests.fleet.settings``, ``MINGUS_FLEET_BROKER_URL`` and
``MINGUS_FLEET_QUEUE``. Importing ``mingus_sessions.celery`` (for ``DatabaseTask``)
makes the worker child start its monitoring sampler as it starts, so the child
joins the fleet as a "worker"; its task gives its pool a checkout.
"""

from __future__ import annotations

import os

import django
from django.apps import apps

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.fleet.settings")
if not apps.ready:
    django.setup()

from celery import Celery
from sqlalchemy import text

from mingus_sessions.celery import DatabaseTask

TASK = "tests.fleet.select_one"


def make_app(broker_url: str, queue: str) -> Celery:
    """The app on ``broker_url`` whose task goes to ``queue``; the caller closes it."""
    found = Celery(f"mingus-fleet-{queue}", set_as_current=False)
    found.conf.update(
        broker_url=broker_url,
        task_default_queue=queue,
        broker_connection_retry_on_startup=True,
        worker_enable_remote_control=False,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
    )

    def select_one(self: DatabaseTask) -> int:
        """One statement on the task's session: a checkout of the worker's pool."""
        return int(self.db_session.session.execute(text("SELECT 1")).scalar_one())

    found.task(base=DatabaseTask, name=TASK, bind=True, shared=False)(select_one)
    return found


app = make_app(
    os.environ.get("MINGUS_FLEET_BROKER_URL", "memory://"),
    os.environ.get("MINGUS_FLEET_QUEUE", "mingus-fleet"),
)
