"""A sink written outside ``dbmazz_connectors``: rows in a SQLite file, registered through ``dbmazz.sinks``."""

from .sink import SqliteSink

__all__ = ["SqliteSink"]
