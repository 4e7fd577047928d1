#!/usr/bin/env bash
# The multi-process load test: the demo under gunicorn (4 sync workers) on a
# PostgreSQL cluster of its own, driven by wrk with a mix of SQLAlchemy and
# Django ORM reads and writes (loadtest/mix.lua), checked by loadtest/run_load.py:
#
#   phase 1  steady load: no error, every worker in the fleet view, pools back
#            to 0 checked out, each worker's resident memory flat
#   phase 2  the same load while the cluster restarts: errors only in the
#            outage, recovery within seconds, no acknowledged write lost
#
#   PY=.venv/bin/python bash scripts/load_test.sh
#
# Needs wrk, gunicorn (in PY's environment), the PostgreSQL server binaries
# (scripts/pg_cluster.sh) and Redis on 127.0.0.1:6379 (LOAD_REDIS_URL; the
# fleet is published under a key prefix of this run, deleted at the end).
# LOAD_PHASE1_SECONDS and LOAD_PHASE2_SECONDS shorten or lengthen the phases.
# Exits non-zero when any check fails; the cluster and gunicorn are always
# stopped, and the work directory is removed unless LOAD_KEEP=1.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
REDIS_URL="${LOAD_REDIS_URL:-redis://127.0.0.1:6379/11}"
WORKERS=4

for tool in wrk psql redis-cli; do
    command -v "$tool" >/dev/null || { echo "load_test.sh: $tool is not installed" >&2; exit 2; }
done
"$PY" -c "import gunicorn" 2>/dev/null \
    || { echo "load_test.sh: gunicorn is not installed in $PY's environment" >&2; exit 2; }

free_port() {
    "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# As root the cluster belongs to the postgres user, who must reach DIR: the
# work directory's parent is mktemp's 0700 directory, so open it to 0755.
WORK="$(mktemp -d /tmp/mingus-load.XXXXXX)"
chmod 755 "$WORK"
PG_DIR="$WORK/pg"
PG_PORT="$(free_port)"
WEB_PORT="$(free_port)"
PREFIX="mingus-load-$$"
GUNICORN_PID=""

cleanup() {
    local status=$?
    if [ -n "$GUNICORN_PID" ] && kill -0 "$GUNICORN_PID" 2>/dev/null; then
        kill -TERM "$GUNICORN_PID" 2>/dev/null || true
        for _ in $(seq 1 40); do
            kill -0 "$GUNICORN_PID" 2>/dev/null || break
            sleep 0.25
        done
        kill -KILL "$GUNICORN_PID" 2>/dev/null || true
        wait "$GUNICORN_PID" 2>/dev/null || true
    fi
    bash scripts/pg_cluster.sh destroy "$PG_DIR" || true
    # Only this run's keys: the prefix is ours.
    redis-cli -u "$REDIS_URL" --scan --pattern "$PREFIX:*" \
        | xargs -r redis-cli -u "$REDIS_URL" del >/dev/null || true
    if [ "${LOAD_KEEP:-0}" = 1 ]; then
        echo "Kept $WORK (gunicorn.log, wrk outputs)."
    else
        rm -rf "$WORK"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "PostgreSQL cluster $PG_DIR on 127.0.0.1:$PG_PORT"
bash scripts/pg_cluster.sh start "$PG_DIR" "$PG_PORT"
psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -q -c "CREATE DATABASE mingus_load"

export DATABASE_URL="postgresql://postgres@127.0.0.1:$PG_PORT/mingus_load"
export DEMO_CACHE_URL="$REDIS_URL"
export DEMO_CACHE_KEY_PREFIX="$PREFIX"
export DEMO_VAR_DIR="$WORK/var"
# Production-like: no DEBUG query log; the breaker retries the database after
# 2 s instead of the default minute, so recovery is measured in seconds.
export DJANGO_DEBUG=0
export DJANGO_SECRET_KEY="load-test-$$-$RANDOM$RANDOM"
export DEMO_BREAKER_RECOVERY_TIMEOUT=2
export MINGUS_METRICS_TOKEN="load-$RANDOM$RANDOM"

"$PY" manage.py migrate --noinput -v 0
"$PY" manage.py load_demo_data >/dev/null

echo "gunicorn: $WORKERS sync workers on 127.0.0.1:$WEB_PORT"
"$PY" -m gunicorn project.wsgi:application --workers "$WORKERS" --worker-class sync \
    --bind "127.0.0.1:$WEB_PORT" --log-level warning >"$WORK/gunicorn.log" 2>&1 &
GUNICORN_PID=$!

"$PY" loadtest/run_load.py --url "http://127.0.0.1:$WEB_PORT" --master "$GUNICORN_PID" \
    --workers "$WORKERS" --pg-dir "$PG_DIR" --work "$WORK" \
    --phase1 "${LOAD_PHASE1_SECONDS:-150}" --phase2 "${LOAD_PHASE2_SECONDS:-60}"
