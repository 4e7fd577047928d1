"""Models only PostgreSQL can hold (installed by tests/settings.py on PostgreSQL runs only)."""
