# The two commands of the quick start are `make demo` and `make test`;
# everything else here helps them or CI.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CKSUM := $(shell cat pyproject.toml requirements.txt | cksum | cut -d' ' -f1)
# What is installed in VENV: the dev extra (the demo's packages and the test
# toolchain: make test, lint) or only the demo extra (make demo).
STAMP := $(VENV)/.installed-$(CKSUM)
DEMO_STAMP := $(VENV)/.installed-demo-$(CKSUM)
DEMO_HOST ?= 127.0.0.1:8000
# runserver (WSGI, the default) or uvicorn (ASGI): make demo DEMO_SERVER=uvicorn.
DEMO_SERVER ?= runserver

.PHONY: demo test lint format typecheck test-core test-sqlite test-postgresql test-mysql test-py312 \
	test-py313 test-faults test-fleet test-topology test-load bench clean FORCE

# A VENV whose Python no longer runs (its interpreter was removed or upgraded away)
# or is older than 3.11 does not count as installed: bootstrap.sh rebuilds it.
VENV_RUNS := $(shell $(PY) -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1 && echo yes)
ifneq ($(VENV_RUNS),yes)
$(STAMP) $(DEMO_STAMP): FORCE
endif

$(STAMP): pyproject.toml requirements.txt
	PYTHON=$(PYTHON) VENV=$(VENV) EXTRAS=dev bash scripts/bootstrap.sh
	@rm -f $(VENV)/.installed-* && touch $(STAMP) $(DEMO_STAMP)

# The dev extra includes the demo's: after make test, make demo installs nothing.
$(DEMO_STAMP): pyproject.toml requirements.txt
	@if [ -f $(STAMP) ] && [ "$(VENV_RUNS)" = yes ]; then :; else \
		PYTHON=$(PYTHON) VENV=$(VENV) EXTRAS=demo bash scripts/bootstrap.sh; fi
	@rm -f $(VENV)/.installed-demo-* && touch $(DEMO_STAMP)

FORCE:

## make demo: the demo project on SQLite (or DATABASE_URL) at http://$(DEMO_HOST)/
## (make demo DEMO_HOST=0.0.0.0:8080 listens on every interface), with a Celery worker on
## a server-less broker (or CELERY_BROKER_URL); Ctrl-C stops both. make demo
## DEMO_SERVER=uvicorn serves it under uvicorn (ASGI) instead of runserver. Installs the
## demo extra only, not the test toolchain.
demo: $(DEMO_STAMP)
	PY=$(PY) DEMO_HOST=$(DEMO_HOST) DEMO_SERVER=$(DEMO_SERVER) bash scripts/demo.sh

## make test: the whole suite on SQLite, and on PostgreSQL / MariaDB where reachable
## (with CI set, PostgreSQL is required), then the coverage gate.
test: $(STAMP)
	PY=$(PY) bash scripts/test.sh

## make test-core: the core's tests alone, without pytest-django or any database
## (make test runs them this way first, then with the rest).
test-core: $(STAMP)
	$(PY) -m pytest tests/core -q -p no:django -p no:mingus_sessions \
		-W ignore::pytest.PytestConfigWarning

test-sqlite: $(STAMP)
	PY=$(PY) bash scripts/test.sh sqlite

test-postgresql: $(STAMP)
	PY=$(PY) bash scripts/test.sh postgresql

test-mysql: $(STAMP)
	PY=$(PY) bash scripts/test.sh mysql

## The other supported lines, on PostgreSQL: Python 3.12 with Django 6.0, Python 3.13 with 6.1.
test-py312:
	$(MAKE) test-postgresql PYTHON="$$(bash scripts/find_python.sh 3.12)" VENV=.venv312 \
		DJANGO_SPEC="Django>=6.0,<6.1"

test-py313:
	$(MAKE) test-postgresql PYTHON="$$(bash scripts/find_python.sh 3.13)" VENV=.venv313 \
		DJANGO_SPEC="Django>=6.1,<6.2"

## make test-faults: the fault-injection suite on a PostgreSQL cluster of its own
## (stopped, hung and restarted by the tests), with real Celery workers.
test-faults: $(STAMP)
	PY=$(PY) bash scripts/test_faults.sh

## make test-fleet: a deployment of real processes (gunicorn with three workers, a Celery
## worker) on PostgreSQL and Redis, seen and steered as one fleet by the pool commands, the
## admin and Prometheus scrapes (promtool from Debian's prometheus package); a minute or so.
test-fleet: $(STAMP)
	PY=$(PY) bash scripts/test_fleet.sh

## make test-topology: PgBouncer, a standby promoted mid-test and a silent network
## partition, each on servers the tests start (as root: the partition test makes a
## network namespace; needs pgbouncer, iproute2 and iptables).
test-topology: $(STAMP)
	PY=$(PY) bash scripts/test_topology.sh

## make test-load: the demo under gunicorn (4 workers) driven by wrk, with a
## PostgreSQL restart in the middle; needs wrk and Redis (docs/reliability.md).
test-load: $(STAMP)
	PY=$(PY) bash scripts/load_test.sh

## make bench: our code against its anchors (raw SQLAlchemy, the Django ORM), then what
## metrics cost a SELECT 1 scope, on PostgreSQL (PGHOST/PGPORT/PGUSER, default
## 127.0.0.1:5432 postgres); see docs/benchmarks.md.
bench: $(STAMP)
	$(PY) -m bench.bench_suite
	$(PY) -m bench.bench_metrics

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

## make clean: what make demo and make test made: the virtual environments (.venv*),
## the demo's files (var/: its SQLite database, broker, cache, worker log), caches and
## coverage data. The next make demo or make test starts from scratch.
clean:
	rm -rf .venv* var .coverage .coverage.* htmlcov build *.egg-info \
		.mypy_cache .ruff_cache .pytest_cache .import_linter_cache
	find . -path ./.git -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
