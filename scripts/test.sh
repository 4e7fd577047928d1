#!/usr/bin/env bash
# Run the suite on each database given (default: all), then the coverage gate.
#
# SQLite always runs. PostgreSQL and MariaDB run when their server answers on
# 127.0.0.1; with CI set, PostgreSQL is required and its absence fails the run.
set -euo pipefail
PY="${PY:-.venv/bin/python}"
COVERAGE_MIN="${COVERAGE_MIN:-90}"
backends=("$@")
[ ${#backends[@]} -eq 0 ] && backends=(sqlite postgresql mysql)

reachable() {  # host port
    "$PY" - "$1" "$2" <<'PYEOF'
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2).close()
except OSError:
    sys.exit(1)
PYEOF
}

"$PY" -m coverage erase
# The core first, as it must run: no pytest-django, no settings, no server.
echo "=== the core, without Django ==="
"$PY" -m pytest tests/core -q -p no:django -p no:mingus_sessions -W ignore::pytest.PytestConfigWarning
ran=()
for backend in "${backends[@]}"; do
    case "$backend" in
        sqlite) ;;
        postgresql)
            if ! reachable "${PGHOST:-127.0.0.1}" "${PGPORT:-5432}"; then
                if [ -n "${CI:-}" ]; then
                    echo "test.sh: PostgreSQL is required in CI but not reachable" >&2
                    exit 1
                fi
                echo "test.sh: PostgreSQL not reachable; skipping its run"
                continue
            fi ;;
        mysql)
            if ! reachable "${MYSQL_HOST:-127.0.0.1}" "${MYSQL_PORT:-3306}" \
                || ! "$PY" -c 'import MySQLdb' 2>/dev/null; then
                echo "test.sh: MariaDB/MySQL server or mysqlclient missing; skipping its run"
                continue
            fi ;;
        *) echo "test.sh: unknown backend $backend" >&2; exit 2 ;;
    esac
    echo "=== tests on $backend ==="
    # The demo's end-to-end tests start the demo on its own database, whatever the
    # suite's backend: they run with the first backend only.
    once=()
    [ "${#ran[@]}" -eq 0 ] || once=(--ignore=tests/e2e)
    MINGUS_TEST_DATABASE="$backend" "$PY" -m coverage run -m pytest "${once[@]}"
    ran+=("$backend")
done

"$PY" -m coverage combine --quiet
"$PY" -m coverage report --fail-under="$COVERAGE_MIN"
echo "test.sh: ran on ${ran[*]}"
