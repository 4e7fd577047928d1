"""The demo's Celery app: ``celery -A project worker``.

Its configuration is the ``CELERY_*`` settings of :mod:`project.settings`
(broker, acks, prefetch, time limits); tasks are found in each installed app's
``tasks`` module. Creating the app reads no settings and opens no connection,
so ``manage.py`` commands work whether or not a broker is reachable.
"""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

app = Celery("project")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
