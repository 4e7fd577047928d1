"""Benchmarks of mingus_sessions (``make bench``); not part of the package."""
