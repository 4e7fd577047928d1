"""The ASGI application of the test settings, for the servers tests/asyncio starts."""

from __future__ import annotations

from django.core.asgi import get_asgi_application

application = get_asgi_application()
