"""The StarRocks sink: Primary Key tables loaded by Stream Load over HTTP, DDL over the MySQL protocol."""

from .config import StarRocksConfig

__all__ = ["StarRocksConfig"]
