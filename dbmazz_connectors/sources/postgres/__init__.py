"""PostgreSQL source: pgoutput logical replication slot, publication, type mapping."""

from .config import PostgresSourceConfig
from .source import PostgresSource

__all__ = ["PostgresSource", "PostgresSourceConfig"]
