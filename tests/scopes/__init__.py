"""Scopes on a real database: session_scope, savepoints, joined scopes, on_commit, retries."""
