"""The PostgreSQL sink."""

from .config import PostgresSinkConfig
from .sink import PostgresSink
from .types import PostgresTypes

__all__ = ["PostgresSink", "PostgresSinkConfig", "PostgresTypes"]
