"""Production topology on servers the tests start: PgBouncer, a standby, a partition.

Run by ``scripts/test_topology.sh`` (``make test-topology``).
"""
