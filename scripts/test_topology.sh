#!/usr/bin/env bash
# The production-topology suite (tests/topology/): PgBouncer, a streaming
# standby promoted mid-test, and a silent network partition, each on servers
# the tests start themselves.
#
#   PY=.venv/bin/python bash scripts/test_topology.sh [pytest args...]
#
# Needs root (the partition test creates a network namespace, a veth pair and
# iptables rules inside that namespace), Debian's pgbouncer, iproute2 and
# iptables, and the PostgreSQL server binaries (scripts/pg_cluster.sh).
# Django's own test database is SQLite: the pools under test reach the
# servers through aliases the tests add.
#
# Whatever happens (a failure, Ctrl-C), the trap stops every server left under
# this run's directory and deletes its network namespace. Exits non-zero if any
# test fails, and also when no test ran at all (pytest's exit code 5).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
CLUSTER="scripts/pg_cluster.sh"

if [ "$(id -u)" != 0 ]; then
    echo "test_topology.sh: run as root (the partition test creates a network namespace)" >&2
    exit 1
fi
for tool in pgbouncer ip iptables; do
    command -v "$tool" >/dev/null || {
        echo "test_topology.sh: $tool is missing (apt-get install pgbouncer iproute2 iptables)" >&2
        exit 1
    }
done

RUN="$$"
BASE="$(mktemp -d /tmp/mingus-topology.XXXXXX)"
# The servers run as "postgres", which must traverse every directory above their data.
chmod 755 "$BASE"

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    local pidfile data
    for pidfile in "$BASE"/*/pgbouncer.pid; do
        [ -s "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
    done
    for data in "$BASE"/*/data; do
        [ -d "$data" ] && { bash "$CLUSTER" destroy "$data" \
            || echo "test_topology.sh: could not destroy $data" >&2; }
    done
    if ip netns list | grep -qw "mingus-topo-$RUN"; then
        ip netns del "mingus-topo-$RUN" || true
    fi
    ip link del "mt${RUN}h" 2>/dev/null || true
    rm -rf "$BASE"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

export MINGUS_TOPOLOGY_BASE="$BASE" MINGUS_TOPOLOGY_RUN="$RUN"
export MINGUS_TEST_DATABASE=sqlite

started=$SECONDS
result=0
"$PY" -m pytest tests/topology "$@" || result=$?
echo "test_topology.sh: pytest exited $result after $((SECONDS - started)) s"
if [ "$result" -eq 5 ]; then
    echo "test_topology.sh: no test ran; that is a failure" >&2
    exit 1
fi
exit "$result"
