"""The core: plain Python over SQLAlchemy.

Settings parsing, engine arguments, pools, the error taxonomy and its
translation, the retry policy, the circuit breaker, histograms, the pool event
recorder, the scope frames and the one path that ends a scope. Nothing here
imports Django (but ``ImproperlyConfigured``), Celery, or the package outside
``_core``: the import-linter contract in ``pyproject.toml`` holds it to that,
and ``tests/core/`` runs it without Django settings or a database server.
"""
