"""The demo project, end to end."""
