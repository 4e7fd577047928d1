"""The Django glue: middleware, tables, the pytest plugin, checks, read-only pools, public names."""
