#!/usr/bin/env bash
# Create the virtual environment and install the package with its dev extras.
# DJANGO_SPEC pins the Django line (CI uses it for the Django 6.x run).
set -euo pipefail
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -e ".[dev]" ${DJANGO_SPEC:+"$DJANGO_SPEC"}
# mysqlclient builds against the MariaDB/MySQL client headers; install it when
# they are present so the suite can also run on MariaDB.
if pkg-config --exists mysqlclient 2>/dev/null || pkg-config --exists libmariadb 2>/dev/null; then
    "$VENV/bin/python" -m pip install --quiet -e ".[mysql]"
else
    echo "bootstrap: no MySQL client headers; skipping mysqlclient (MariaDB tests will not run)"
fi
"$VENV/bin/python" -c 'import django, sqlalchemy; print(f"bootstrap: Django {django.__version__}, SQLAlchemy {sqlalchemy.__version__}")'
