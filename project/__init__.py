"""The demo Django project that uses mingus_sessions (not part of the installed package)."""
