"""What ``make demo`` checks before it starts anything: ``python -m project.preflight``.

- ``DEMO_HOST`` (``host:port``, ``port``, ``[ipv6]:port``; default ``127.0.0.1:8000``)
  names an address this machine can listen on, and no one listens there yet (the
  same bind, with ``SO_REUSEADDR``, as the development server's);
- ``DEMO_SERVER`` is ``runserver`` (the default) or ``uvicorn``, and that server is installed;
- the settings load (a malformed ``DATABASE_URL`` is refused by them);
- the database answers (within a few seconds).

Each problem is one line on stderr, saying what is wrong and what to do, and
exit status 1. Otherwise the URL to open in a browser is the one line on stdout.
"""

from __future__ import annotations

import errno
import importlib.util
import os
import re
import socket
import sys

DEFAULT_HOST = "127.0.0.1:8000"
#: The development server's own default host when DEMO_HOST is only a port.
_RUNSERVER_HOST = "127.0.0.1"
_ALL_INTERFACES = {"0.0.0.0", "::", "0"}
#: ``port``, ``host:port`` or ``[ipv6]:port``.
_DEMO_HOST = re.compile(r"(?:\[(?P<ipv6>[0-9a-fA-F:.]+)\]:|(?P<host>[^:\[\]]+):)?(?P<port>\d+)")
#: What ``DEMO_SERVER`` may name: the development server (WSGI) or uvicorn (ASGI).
SERVERS = ("runserver", "uvicorn")
#: Seconds the database may take to answer the first connection.
CONNECT_TIMEOUT = 5


class PreflightError(Exception):
    """A problem ``make demo`` reports in one line before starting anything."""


def parse_demo_host(value: str) -> tuple[str, int]:
    """``(host, port)`` of a ``DEMO_HOST`` value, as ``manage.py runserver`` reads it."""
    text = value.strip()
    match = _DEMO_HOST.fullmatch(text)
    if match is None:
        raise PreflightError(
            f"DEMO_HOST={value!r} is not host:port; use e.g. make demo DEMO_HOST=127.0.0.1:8080"
        )
    port = int(match["port"])
    if not 0 < port < 65536:
        raise PreflightError(f"DEMO_HOST={value!r}: the port must be between 1 and 65535")
    host = match["ipv6"] or match["host"] or _RUNSERVER_HOST
    return host, port


def browser_url(host: str, port: int) -> str:
    """The URL to open on this machine (an all-interfaces address is reached on loopback)."""
    if host in _ALL_INTERFACES:
        host = "::1" if host == "::" else "127.0.0.1"
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def check_port(host: str, port: int) -> None:
    """Bind ``host:port`` as the development server will, and let it go at once."""
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    bind_host = "0.0.0.0" if host == "0" else host
    try:
        infos = socket.getaddrinfo(bind_host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise PreflightError(
            f"DEMO_HOST: cannot resolve {host!r} ({exc.strerror}); use an address of this "
            "machine, e.g. make demo DEMO_HOST=127.0.0.1:8000"
        ) from exc
    family, kind, proto, _name, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PreflightError(
                    f"{shown} is already in use (another make demo?): stop what listens "
                    f"there or pick another port, e.g. make demo DEMO_HOST={host}:{port + 1}"
                ) from exc
            raise PreflightError(
                f"cannot listen on {shown} ({exc.strerror}); pick another DEMO_HOST, "
                "e.g. make demo DEMO_HOST=127.0.0.1:8000"
            ) from exc


def check_server(name: str) -> None:
    """``DEMO_SERVER`` names a server the demo knows, and this environment has it."""
    if name not in SERVERS:
        raise PreflightError(
            f"DEMO_SERVER={name!r} is not one of {', '.join(SERVERS)}; "
            "use e.g. make demo DEMO_SERVER=uvicorn"
        )
    if name != "runserver" and importlib.util.find_spec(name) is None:
        raise PreflightError(
            f"DEMO_SERVER={name} but {name} is not installed in this environment; "
            f"run make clean, then make demo DEMO_SERVER={name}"
        )


def _database_shown() -> str:
    """Which database the demo uses, for the message (never a password)."""
    url = os.environ.get("DATABASE_URL")
    if not url:
        return "the demo's SQLite file"
    from sqlalchemy.engine import make_url

    shown = make_url(url).render_as_string(hide_password=True)
    return f"DATABASE_URL ({shown})"


def check_database() -> None:
    """Load the settings and connect to the default database once."""
    import django
    from django.core.exceptions import ImproperlyConfigured

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    try:
        django.setup()
    except ImproperlyConfigured as exc:
        raise PreflightError(f"the demo's settings are invalid: {exc}") from exc

    from django.db import connections

    connection = connections["default"]
    if connection.vendor in {"postgresql", "mysql"}:
        # Fail in seconds, not at the driver's default (none for libpq).
        connection.settings_dict["OPTIONS"].setdefault("connect_timeout", CONNECT_TIMEOUT)
    try:
        connection.ensure_connection()
    except Exception as exc:  # any failure to connect is reported as one line
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        why = lines[0] if lines else type(exc).__name__
        if connection.vendor == "sqlite":
            advice = "its folder must exist and be writable"
        else:
            advice = "start that server or fix DATABASE_URL"
        if os.environ.get("DATABASE_URL"):
            advice += " (without DATABASE_URL the demo uses an SQLite file in var/)"
        raise PreflightError(f"cannot connect to {_database_shown()}: {why}; {advice}") from exc
    finally:
        connection.close()


def main() -> int:
    try:
        host, port = parse_demo_host(os.environ.get("DEMO_HOST") or DEFAULT_HOST)
        check_port(host, port)
        check_server(os.environ.get("DEMO_SERVER") or "runserver")
        check_database()
    except PreflightError as exc:
        print(f"make demo: {exc}", file=sys.stderr)
        return 1
    print(browser_url(host, port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
