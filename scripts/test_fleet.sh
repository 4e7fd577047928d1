#!/usr/bin/env bash
# The fleet of real processes (tests/fleet): gunicorn with three workers and a Celery
# worker on the machine's Redis and PostgreSQL, read and steered by the pool commands,
# the admin and Prometheus scrapes.
#
#   PY=.venv/bin/python bash scripts/test_fleet.sh [pytest args...]
#
# Needs PostgreSQL (PGHOST/PGPORT, default 127.0.0.1:5432), Redis on 127.0.0.1:6379
# (MINGUS_FLEET_REDIS) for the fleet cache and the broker, gunicorn and celery in PY's
# environment, and promtool (Debian's prometheus package). The processes are started
# and stopped by the tests; the Redis keys they used carry a prefix of the run's own
# and are deleted. Exits non-zero if any test fails, and also when no test ran
# (pytest's exit code 5). The figures measured are in test-artifacts/fleet-figures.json.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"

command -v promtool >/dev/null || { echo "test_fleet.sh: promtool is not installed" >&2; exit 2; }
for module in gunicorn celery redis prometheus_client; do
    "$PY" -c "import $module" 2>/dev/null \
        || { echo "test_fleet.sh: $module is not installed in $PY's environment" >&2; exit 2; }
done

export MINGUS_FLEET_TESTS=1
export MINGUS_TEST_DATABASE=postgresql
export MINGUS_TEST_DB_PREFIX="${MINGUS_TEST_DB_PREFIX:-fleet_$$_}"

started=$SECONDS
result=0
"$PY" -m pytest tests/fleet "$@" || result=$?
echo "test_fleet.sh: pytest exited $result after $((SECONDS - started)) s"
if [ -f test-artifacts/fleet-figures.json ]; then
    echo "test_fleet.sh: figures (test-artifacts/fleet-figures.json):"
    cat test-artifacts/fleet-figures.json
fi
if [ "$result" -eq 5 ]; then
    echo "test_fleet.sh: no test ran; that is a failure" >&2
    exit 1
fi
exit "$result"
