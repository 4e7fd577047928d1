"""Fault injection on a PostgreSQL cluster the run owns (``scripts/test_faults.sh``)."""
