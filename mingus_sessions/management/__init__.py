"""Django management commands of mingus_sessions (see docs/operations.md)."""
