"""The DuckDB sink (the embedded default)."""

from .config import DuckDbConfig
from .sink import DuckDbSink
from .types import DuckDbTypes

__all__ = ["DuckDbSink", "DuckDbConfig", "DuckDbTypes"]
