"""Reporting and operator surfaces: metrics, monitoring, Prometheus, endpoints, admin, commands."""
