"""``pool_status``, ``pool_check``, ``pool_reset`` and ``pool_advise``.

Each is a thin wrapper over :mod:`mingus_sessions.metrics`; modules whose name
starts with an underscore are private helpers, not commands.
"""
