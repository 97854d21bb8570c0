"""A sink written outside ``dbmazz_connectors``: rows in a SQLite file, registered through ``dbmazz.sinks``.

Twice: ``SqliteSink`` implements the raw Sink protocol, ``SqliteToolkitSink`` the sink toolkit's hooks."""

from .sink import SqliteSink
from .toolkit_sink import SqliteToolkitSink

__all__ = ["SqliteSink", "SqliteToolkitSink"]
