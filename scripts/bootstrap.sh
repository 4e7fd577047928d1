#!/usr/bin/env bash
# Create (or repair) the virtual environment and install the package with one extra:
# EXTRAS=dev (default: the demo's packages and the test toolchain, for `make test`)
# or EXTRAS=demo (what the demo imports, for `make demo`).
# PYTHON is the interpreter to build VENV with; DJANGO_SPEC pins the Django line
# (CI uses it for the Django 6.x runs). BOOTSTRAP_VENV_ONLY=1 stops once VENV is
# sound, before pip runs.
#
# A VENV built by another Python than PYTHON (another version, one older than the
# package supports, or one that no longer runs, e.g. removed by an upgrade) is
# rebuilt; a folder that is not a virtual environment is left alone, with the
# advice to run `make clean`.
set -euo pipefail
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
EXTRAS="${EXTRAS:-dev}"
MIN_PYTHON="3.11"
VERSION_OF='import sys; print("%d.%d" % sys.version_info[:2])'

too_old() {  # version: true when it is below MIN_PYTHON
    [ "$(printf '%s\n%s\n' "$MIN_PYTHON" "$1" | sort -V | head -n 1)" != "$MIN_PYTHON" ]
}

if ! wanted="$("$PYTHON" -c "$VERSION_OF" 2>/dev/null)"; then
    echo "bootstrap: $PYTHON does not run; pass a Python $MIN_PYTHON or newer, e.g. make demo PYTHON=python3.12" >&2
    exit 1
fi
if too_old "$wanted"; then
    echo "bootstrap: $PYTHON is Python $wanted; mingus_sessions needs $MIN_PYTHON or newer, e.g. make demo PYTHON=python3.12" >&2
    exit 1
fi

if [ -e "$VENV" ] || [ -L "$VENV" ]; then
    found="$("$VENV/bin/python" -c "$VERSION_OF" 2>/dev/null || true)"
    if [ -z "$found" ]; then
        problem="its Python does not run (was the interpreter it was built with removed?)"
    elif [ "$found" != "$wanted" ]; then
        problem="it was built with Python $found, not $PYTHON (Python $wanted)"
    else
        problem=""
    fi
    if [ -n "$problem" ]; then
        if [ ! -f "$VENV/pyvenv.cfg" ]; then
            echo "bootstrap: $VENV is not a usable virtual environment ($problem) and not one this script may delete; run make clean, then try again" >&2
            exit 1
        fi
        echo "bootstrap: rebuilding $VENV: $problem"
        rm -rf "$VENV"
    fi
fi
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
[ "${BOOTSTRAP_VENV_ONLY:-}" = 1 ] && exit 0

"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -e ".[$EXTRAS]" ${DJANGO_SPEC:+"$DJANGO_SPEC"}
# mysqlclient builds against the MariaDB/MySQL client headers; the test suite
# installs it when they are present so that it can also run on MariaDB.
if [ "$EXTRAS" = dev ]; then
    if pkg-config --exists mysqlclient 2>/dev/null || pkg-config --exists libmariadb 2>/dev/null; then
        "$VENV/bin/python" -m pip install --quiet -e ".[mysql]"
    else
        echo "bootstrap: no MySQL client headers; skipping mysqlclient (MariaDB tests will not run)"
    fi
fi
"$VENV/bin/python" -c 'import django, sqlalchemy; print(f"bootstrap: Django {django.__version__}, SQLAlchemy {sqlalchemy.__version__}")'
