#!/usr/bin/env bash
# The demo (`make demo`): check DEMO_HOST's port and the database (one line and
# exit 1 if either is a problem), migrate, load the demo data, create the demo admin,
# start a Celery worker in the background, and serve the site until Ctrl-C;
# the worker is stopped when the server exits.
#
#   scripts/demo.sh          all of the above (PY: the Python to use, DEMO_HOST: host:port,
#                            DEMO_SERVER: runserver, the default, or uvicorn for ASGI)
#   scripts/demo.sh worker   only the worker, in the foreground (what the demo starts)
#
# DATABASE_URL picks the database and CELERY_BROKER_URL the broker (default: an
# SQLite file in DEMO_VAR_DIR, no server needed); see project/settings.py.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
DEMO_HOST="${DEMO_HOST:-127.0.0.1:8000}"
# project.preflight refuses anything else in one line, before anything starts.
DEMO_SERVER="${DEMO_SERVER:-runserver}"
export DEMO_SERVER
VAR_DIR="${DEMO_VAR_DIR:-var}"

worker() {
    # prefork with two children: each child has its own connection pools (the
    # engines are fork-safe), and the task time limits are enforced.
    exec "$PY" -m celery -A project worker --pool=prefork --concurrency=2 --loglevel=INFO "$@"
}

if [ "${1:-}" = "worker" ]; then
    shift
    worker "$@"
fi

# Before anything starts: DEMO_HOST's port is free, DEMO_SERVER is installed, the
# settings load, the database answers; each problem is one line
# (project/preflight.py) and exit 1.
if [ ! -x "$PY" ] && ! command -v "$PY" >/dev/null 2>&1; then
    echo "make demo: $PY does not run; run make clean, then make demo again" >&2
    exit 1
fi
URL="$("$PY" -m project.preflight)"

"$PY" manage.py migrate --noinput
"$PY" manage.py load_demo_data
"$PY" manage.py create_demo_admin

mkdir -p "$VAR_DIR"
LOG="$VAR_DIR/celery-worker.log"
WORKER_PID=""

stop_worker() {
    [ -n "$WORKER_PID" ] || return 0
    if kill -0 "$WORKER_PID" 2>/dev/null; then
        echo "Stopping the Celery worker (pid $WORKER_PID)..."
        kill -TERM "$WORKER_PID" 2>/dev/null || true
        # A warm shutdown lets a running task finish; give it 15 seconds.
        for _ in $(seq 1 30); do
            kill -0 "$WORKER_PID" 2>/dev/null || break
            sleep 0.5
        done
        if kill -0 "$WORKER_PID" 2>/dev/null; then
            echo "The worker did not stop; killing it."
            kill -KILL "$WORKER_PID" 2>/dev/null || true
        fi
    fi
    wait "$WORKER_PID" 2>/dev/null || true
    WORKER_PID=""
}
trap stop_worker EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

worker >"$LOG" 2>&1 &
WORKER_PID=$!
if [ -n "${CELERY_BROKER_URL:-}" ]; then
    BROKER="the broker in CELERY_BROKER_URL"
else
    BROKER="the server-less broker $VAR_DIR/celery-broker.sqlite3"
fi
# Wait (a little) for the worker to say it is ready, so a broken setup shows now.
for _ in $(seq 1 40); do
    if ! kill -0 "$WORKER_PID" 2>/dev/null; then
        echo "The Celery worker exited at start; its log ($LOG) ends with:" >&2
        tail -n 20 "$LOG" >&2
        exit 1
    fi
    grep -q " ready\.$" "$LOG" 2>/dev/null && break
    sleep 0.5
done
if grep -q " ready\.$" "$LOG" 2>/dev/null; then
    echo "Celery worker ready (pid $WORKER_PID) on $BROKER; log: $LOG"
else
    echo "Celery worker started (pid $WORKER_PID) on $BROKER, not ready yet; log: $LOG"
fi
if [ "$DEMO_SERVER" = "uvicorn" ]; then
    SERVED=" under uvicorn (ASGI)"
else
    SERVED=""
fi
if [ "$URL" = "http://$DEMO_HOST/" ]; then
    echo "Serving the demo$SERVED at $URL (Ctrl-C stops the server and the worker)."
else
    echo "Serving the demo$SERVED at $URL (listening on $DEMO_HOST; Ctrl-C stops the server and the worker)."
fi

if [ "$DEMO_SERVER" = "uvicorn" ]; then
    # The same site as an ASGI application: async views get request.adb_session.
    "$PY" -m project.asgi_server
else
    "$PY" manage.py runserver "$DEMO_HOST"
fi
