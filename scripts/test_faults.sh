#!/usr/bin/env bash
# The fault-injection suite, on a PostgreSQL cluster this run owns.
#
#   PY=.venv/bin/python bash scripts/test_faults.sh [pytest args...]
#
# The cluster (scripts/pg_cluster.sh) gets its own data directory under /tmp
# and a free port on 127.0.0.1, so the tests may stop it, hang it (SIGSTOP) and
# restart it without harming any other server or run. The tests find it
# through PGHOST/PGPORT and MINGUS_FAULTS_PGDATA. Whatever happens (a failure,
# Ctrl-C), the trap resumes a paused cluster and destroys it.
#
# Runs tests/faults/ and the existing fault modules against it. Exits non-zero
# if any test fails, and also when no test ran at all (pytest's exit code 5).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
CLUSTER="scripts/pg_cluster.sh"
FAULT_TESTS=(
    tests/faults
    tests/scopes/test_pg_faults.py
    tests/scopes/test_scope_faults.py
    tests/celery/test_workers.py
)

free_port() {
    "$PY" -c 'import socket
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    print(s.getsockname()[1])'
}

resume_all() {  # postmaster pid: SIGCONT it and every child, in case a test left them stopped
    local pid="$1" child
    kill -CONT "$pid" 2>/dev/null || true
    for child in $(ps -o pid= --ppid "$pid" 2>/dev/null); do
        kill -CONT "$child" 2>/dev/null || true
    done
}

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    if [ -s "$PGDATA_DIR/postmaster.pid" ]; then
        resume_all "$(bash "$CLUSTER" pid "$PGDATA_DIR")"
    fi
    bash "$CLUSTER" destroy "$PGDATA_DIR" || echo "test_faults.sh: could not destroy $PGDATA_DIR" >&2
    rm -rf "$BASE"
    exit "$status"
}

# The cluster runs as "postgres" when we are root, so every directory above its
# data must be traversable by it: /tmp is, wherever the checkout lives.
BASE="$(mktemp -d /tmp/mingus-faults.XXXXXX)"
chmod 755 "$BASE"
PGDATA_DIR="$BASE/data"
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

PORT="$(free_port)"
echo "test_faults.sh: starting an owned PostgreSQL cluster in $PGDATA_DIR on 127.0.0.1:$PORT"
bash "$CLUSTER" start "$PGDATA_DIR" "$PORT"

export PGHOST=127.0.0.1 PGPORT="$PORT" PGUSER=postgres PGPASSWORD=
export MINGUS_FAULTS_PGDATA="$PGDATA_DIR"
export MINGUS_TEST_DATABASE=postgresql
export MINGUS_TEST_DB_PREFIX="faults_$$_"

started=$SECONDS
# In the foreground, so Ctrl-C reaches pytest, which runs its teardowns (the
# fixtures resume a paused cluster, Celery workers are stopped) before the
# trap destroys the cluster.
result=0
"$PY" -m pytest "${FAULT_TESTS[@]}" "$@" || result=$?
echo "test_faults.sh: pytest exited $result after $((SECONDS - started)) s"
if [ "$result" -eq 5 ]; then
    echo "test_faults.sh: no test ran; that is a failure" >&2
    exit 1
fi
exit "$result"
