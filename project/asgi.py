"""ASGI entry point of the demo project (``make demo DEMO_SERVER=uvicorn``, or
``uvicorn project.asgi:application``).

With ``DEBUG`` on it serves the static files too (the admin's, the debug
toolbar's), as ``runserver`` does; in production a web server or WhiteNoise would.
"""

from __future__ import annotations

import os

from django.conf import settings
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

application = get_asgi_application()
if settings.DEBUG:
    application = ASGIStaticFilesHandler(application)
