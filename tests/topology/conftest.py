"""Servers of the tests' own: PostgreSQL clusters, a standby, PgBouncer, a partitioned network.

These tests promote a standby, put PgBouncer in front of a cluster and cut a
cluster's network, so they only run on servers they start themselves, under
``scripts/test_topology.sh`` (``make test-topology``). That script exports
``MINGUS_TOPOLOGY_BASE`` (a directory for the servers' files) and
``MINGUS_TOPOLOGY_RUN`` (a name for this run's network namespace), and
removes whatever a test left behind. Without them every test here is skipped,
so ``make test`` never starts any of it.

Django's own databases stay the suite's (SQLite by default): the pools under
test reach the servers through ``DATABASES`` aliases added for one test, and
nothing here touches a server that the tests did not start.
"""

from __future__ import annotations

import contextlib
import copy
import ipaddress
import os
import random
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.conf import settings as django_settings

from tests import helpers
from tests.helpers import poll

BASE = os.environ.get("MINGUS_TOPOLOGY_BASE", "")
RUN = os.environ.get("MINGUS_TOPOLOGY_RUN", "")
HERE = Path(__file__).resolve().parent
PG_CLUSTER = HERE.parent.parent / "scripts" / "pg_cluster.sh"
SKIP_REASON = (
    "needs servers the run starts itself: run `make test-topology` "
    "(scripts/test_topology.sh); MINGUS_TOPOLOGY_BASE is unset"
)
#: PgBouncer refuses to run as root; so does PostgreSQL (pg_cluster.sh handles that).
SERVER_USER = "postgres" if os.geteuid() == 0 else None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip this package, and only it, unless scripts/test_topology.sh runs it."""
    if BASE:
        return
    skip = pytest.mark.skip(reason=SKIP_REASON)
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(skip)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> str:
    """Run a command; fail the test with its output if it fails."""
    result = subprocess.run(
        list(args),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, **(env or {})},
    )
    assert result.returncode == 0, f"{' '.join(args)} exited {result.returncode}: {result.stderr}"
    return result.stdout


def workdir(name: str) -> Path:
    """A new directory under the run's base, which the server user may write."""
    path = Path(BASE) / f"{name}-{os.getpid()}-{random.randrange(10**6)}"
    path.mkdir(mode=0o755)
    if SERVER_USER:
        subprocess.run(["chown", f"{SERVER_USER}:", str(path)], check=True)
    return path


class Cluster:
    """A PostgreSQL cluster of the test's own (``scripts/pg_cluster.sh``)."""

    def __init__(self, data_dir: Path, port: int, host: str = "127.0.0.1") -> None:
        self.data_dir = data_dir
        self.port = port
        self.host = host

    @classmethod
    def start(
        cls, name: str, *, host: str = "127.0.0.1", port: int | None = None, netns: str = ""
    ) -> Cluster:
        cluster = cls(workdir(name) / "data", port or free_port(), host)
        run(
            "bash",
            str(PG_CLUSTER),
            "start",
            str(cluster.data_dir),
            str(cluster.port),
            env={"PG_CLUSTER_LISTEN": host, "PG_CLUSTER_NETNS": netns},
        )
        return cluster

    def standby(self, name: str) -> Cluster:
        """A streaming standby of this cluster (``pg_basebackup -R``), started on a free port."""
        standby = Cluster(workdir(name) / "data", free_port())
        run(
            "bash",
            str(PG_CLUSTER),
            "standby",
            str(standby.data_dir),
            str(standby.port),
            str(self.port),
        )
        return standby

    def stop(self) -> None:
        """Stop the server (fast shutdown); ``restart()`` starts it again on its port."""
        run("bash", str(PG_CLUSTER), "stop", str(self.data_dir))

    def restart(self) -> None:
        run("bash", str(PG_CLUSTER), "restart", str(self.data_dir))

    def promote(self) -> None:
        """Promote this standby; returns once it accepts writes."""
        run("bash", str(PG_CLUSTER), "promote", str(self.data_dir))

    def destroy(self) -> None:
        run("bash", str(PG_CLUSTER), "destroy", str(self.data_dir))

    def connect(self, *, timeout: int = 5) -> psycopg.Connection[Any]:
        return psycopg.connect(
            host=self.host,
            port=self.port,
            user="postgres",
            dbname="postgres",
            autocommit=True,
            connect_timeout=timeout,
        )

    def sql(self, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run one statement on the server directly (autocommit); its rows, if any."""
        with self.connect() as conn:
            cursor = conn.execute(statement.encode(), params or None)
            return cursor.fetchall() if cursor.description else []


def add_alias(
    monkeypatch: pytest.MonkeyPatch,
    alias: str,
    host: str,
    port: int,
    *,
    name: str = "postgres",
    **extra: Any,
) -> None:
    """A PostgreSQL ``DATABASES`` alias for one test, which the test may use."""
    helpers.add_alias(
        monkeypatch,
        alias,
        {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": name,
            "USER": "postgres",
            "PASSWORD": "",
            "HOST": host,
            "PORT": str(port),
            "OPTIONS": {},
            "ATOMIC_REQUESTS": False,
            **extra,
        },
    )


def configure(
    settings: Any,
    pools: dict[str, dict[str, Any]],
    *,
    breaker: dict[str, Any] | None = None,
    retry: dict[str, Any] | None = None,
) -> None:
    """``MINGUS_SESSIONS`` as the suite has it plus ``pools``; ``breaker`` and ``retry`` merged."""
    config = copy.deepcopy(django_settings.MINGUS_SESSIONS)
    config["POOLS"] = {**config["POOLS"], **pools}
    if breaker is not None:
        config["CIRCUIT_BREAKER"] = {**config["CIRCUIT_BREAKER"], **breaker}
    if retry is not None:
        config["RETRY"] = {**config.get("RETRY", {}), **retry}
    settings.MINGUS_SESSIONS = config


# -- PgBouncer ----------------------------------------------------------------------------


class Bouncer:
    """Debian's pgbouncer in front of ``backend``, on a free port of 127.0.0.1.

    Two databases: ``txn`` in transaction mode (a small server pool, so that
    clients share server connections) and ``sess`` in session mode.
    """

    def __init__(self, backend: Cluster, *, ignore_options: bool) -> None:
        self.port = free_port()
        self.directory = workdir("pgbouncer")
        users = self.directory / "users.txt"
        users.write_text('"postgres" ""\n')
        ignore = "ignore_startup_parameters = options\n" if ignore_options else ""
        self.ini = self.directory / "pgbouncer.ini"
        self.ini.write_text(
            "[databases]\n"
            f"txn = host=127.0.0.1 port={backend.port} dbname=postgres "
            "pool_mode=transaction pool_size=4\n"
            f"sess = host=127.0.0.1 port={backend.port} dbname=postgres pool_mode=session\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            "auth_type = trust\n"
            f"auth_file = {users}\n"
            "pool_mode = transaction\n"
            "max_client_conn = 500\n"
            "default_pool_size = 20\n"
            f"logfile = {self.directory / 'pgbouncer.log'}\n"
            f"pidfile = {self.directory / 'pgbouncer.pid'}\n" + ignore
        )
        self.process = subprocess.Popen(
            ["pgbouncer", str(self.ini)],
            user=SERVER_USER,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        poll(self._listening, 15, "pgbouncer listening")

    def _listening(self) -> bool:
        if self.process.poll() is not None:
            pytest.fail(f"pgbouncer exited {self.process.returncode}: {self.log()}")
        try:
            socket.create_connection(("127.0.0.1", self.port), 1).close()
        except OSError:
            return False
        return True

    def log(self) -> str:
        path = self.directory / "pgbouncer.log"
        return path.read_text() if path.exists() else ""

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture(scope="module")
def backend() -> Iterator[Cluster]:
    """A cluster of the module's own, with the ``notes`` table the tests write."""
    cluster = Cluster.start("backend")
    try:
        cluster.sql("CREATE TABLE notes (id serial PRIMARY KEY, title text NOT NULL)")
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture(scope="module")
def bouncer(backend: Cluster) -> Iterator[Bouncer]:
    """PgBouncer as installed: a startup parameter it does not know is refused."""
    started = Bouncer(backend, ignore_options=False)
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="module")
def lenient_bouncer(backend: Cluster) -> Iterator[Bouncer]:
    """PgBouncer with the usual workaround: ``ignore_startup_parameters = options``."""
    started = Bouncer(backend, ignore_options=True)
    try:
        yield started
    finally:
        started.stop()


# -- a partitioned network ------------------------------------------------------------------


def _free_subnet() -> str:
    """A private /24 (``10.x.y``) that no address or route of this host overlaps."""
    taken = []
    for line in run("ip", "-4", "-o", "addr").splitlines() + run("ip", "-4", "route").splitlines():
        for word in line.split():
            with contextlib.suppress(ValueError):
                taken.append(ipaddress.ip_network(word, strict=False))
    for _ in range(200):
        candidate = ipaddress.ip_network(
            f"10.{random.randrange(100, 255)}.{random.randrange(256)}.0/24"
        )
        if not any(candidate.overlaps(network) for network in taken if network.prefixlen > 0):
            return str(candidate.network_address).rsplit(".", 1)[0]
    raise RuntimeError("no free 10.x.y.0/24 for the test's network namespace")


class Network:
    """A network namespace joined to the host by a veth pair; :meth:`cut` drops all its traffic.

    The cut is silent, as a dead switch or a host gone is: iptables drops
    every packet both ways on the namespace's side, so no FIN or RST ever
    reaches the client.
    """

    def __init__(self) -> None:
        suffix = RUN or str(os.getpid())
        self.name = f"mingus-topo-{suffix}"
        self.host_side = f"mt{suffix}h"[-15:]
        self.inside = f"mt{suffix}n"[-15:]
        subnet = _free_subnet()
        self.host_address = f"{subnet}.1"
        self.server_address = f"{subnet}.2"
        self.is_cut = False

    def create(self) -> None:
        run("ip", "netns", "add", self.name)
        run("ip", "link", "add", self.host_side, "type", "veth", "peer", "name", self.inside)
        run("ip", "link", "set", self.inside, "netns", self.name)
        run("ip", "addr", "add", f"{self.host_address}/24", "dev", self.host_side)
        run("ip", "link", "set", self.host_side, "up")
        self._inside("ip", "addr", "add", f"{self.server_address}/24", "dev", self.inside)
        self._inside("ip", "link", "set", self.inside, "up")
        self._inside("ip", "link", "set", "lo", "up")

    def _inside(self, *args: str) -> str:
        return run("ip", "netns", "exec", self.name, *args)

    def cut(self) -> None:
        self._inside("iptables", "-A", "INPUT", "-i", self.inside, "-j", "DROP")
        self._inside("iptables", "-A", "OUTPUT", "-o", self.inside, "-j", "DROP")
        self.is_cut = True

    def heal(self) -> None:
        self._inside("iptables", "-F")
        self.is_cut = False

    def delete(self) -> None:
        """Remove the namespace; the veth pair goes with it."""
        subprocess.run(["ip", "netns", "del", self.name], check=False, capture_output=True)
        subprocess.run(["ip", "link", "del", self.host_side], check=False, capture_output=True)


@pytest.fixture(scope="module")
def partitioned() -> Iterator[tuple[Network, Cluster]]:
    """A cluster inside a network namespace of the test's own, and that namespace's controls."""
    network = Network()
    cluster: Cluster | None = None
    try:
        network.create()
        cluster = Cluster.start("netns", host=network.server_address, port=5432, netns=network.name)
        cluster.sql("CREATE TABLE notes (id serial PRIMARY KEY, title text NOT NULL)")
        yield network, cluster
    finally:
        with contextlib.suppress(Exception):
            network.heal()
        if cluster is not None:
            cluster.destroy()
        network.delete()
