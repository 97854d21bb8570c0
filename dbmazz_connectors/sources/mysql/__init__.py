"""MySQL/MariaDB source: row binlog reader with a column-wise decoder into Arrow."""

from .config import MySqlConfig
from .source import MySqlSource

__all__ = ["MySqlSource", "MySqlConfig"]
