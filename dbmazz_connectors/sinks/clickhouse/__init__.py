"""ClickHouse sink: ReplacingMergeTree tables fed by idempotent Arrow inserts over HTTP."""

from .config import ClickHouseConfig
from .sink import ClickHouseSink

__all__ = ["ClickHouseSink", "ClickHouseConfig"]
