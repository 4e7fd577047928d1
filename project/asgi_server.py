"""The demo under uvicorn: ``python -m project.asgi_server`` (``make demo DEMO_SERVER=uvicorn``).

It listens where ``DEMO_HOST`` says, read as ``runserver`` reads it
(:func:`project.preflight.parse_demo_host`), and serves
:mod:`project.asgi`: the same pages as ``runserver``, with ``SessionMiddleware``
in async mode, so async views (the live analytics) get ``request.adb_session``.
Ctrl-C stops it after the requests in flight, as it stops ``runserver``.
"""

from __future__ import annotations

import os

import uvicorn

from project.preflight import DEFAULT_HOST, parse_demo_host

#: Seconds the requests in flight get to finish once Ctrl-C is pressed.
GRACEFUL_SHUTDOWN = 5


def main() -> None:
    host, port = parse_demo_host(os.environ.get("DEMO_HOST") or DEFAULT_HOST)
    uvicorn.run(
        "project.asgi:application",
        host="0.0.0.0" if host == "0" else host,
        port=port,
        # Django has no lifespan handler: off, rather than a notice at every start.
        lifespan="off",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN,
    )


if __name__ == "__main__":
    main()
