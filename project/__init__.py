"""The demo Django project that uses mingus_sessions (not part of the installed package).

The Celery app is imported here, as Celery's Django guide does, so that it is
the current app whenever Django runs (``shared_task`` tasks bind to it, and the
web process publishes through its broker). Importing it connects to nothing.
"""

from .celery import app as celery_app

__all__ = ["celery_app"]
