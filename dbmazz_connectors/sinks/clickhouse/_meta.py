"""The ClickHouse sink's own tables: per-table state and applied-batch records (no transactions needed).

* ``_dbmazz_tables``: per source table its sink table, logical schema (JSON) and the highest
  truncate version applied; ``ReplacingMergeTree(revision)``, read with FINAL, newest revision wins;
* ``_dbmazz_applied_batches``: one row per applied (pipeline, batch, table), written after the
  batch's data; a batch with a record is skipped. A batch without one is written again, and the
  insert deduplication tokens make that a no-op for the parts already in.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import pyarrow as pa

from ...core.schema import TableSchema

__all__ = ["TableState", "META_TABLES_DDL", "TABLES", "APPLIED", "state_row", "applied_row", "parse_state"]

TABLES = "_dbmazz_tables"
APPLIED = "_dbmazz_applied_batches"

META_TABLES_DDL = (
    f"CREATE TABLE IF NOT EXISTS {TABLES} (table_name String, target String, schema_json String, "
    "truncated_version UInt64, revision UInt64) ENGINE = ReplacingMergeTree(revision) ORDER BY table_name",
    f"CREATE TABLE IF NOT EXISTS {APPLIED} (pipeline String, batch_id String, table_name String, "
    "rows_written UInt64, high_water_version UInt64, applied_at DateTime64(6, 'UTC') DEFAULT now64(6)) "
    "ENGINE = ReplacingMergeTree ORDER BY (pipeline, table_name, batch_id)",
)


@dataclass(frozen=True)
class TableState:
    """What the sink knows about one source table: its sink table, the columns it holds, the last truncate."""

    table: str  # the source table, schema.name
    target: str  # the sink table's name in the configured database
    schema: TableSchema  # the sink's logical schema (dropped columns kept, types widened)
    truncated_version: int = 0


def state_row(state: TableState) -> pa.Table:
    return pa.table(
        {
            "table_name": [state.table],
            "target": [state.target],
            "schema_json": [json.dumps(state.schema.to_dict())],
            "truncated_version": pa.array([state.truncated_version], pa.uint64()),
            "revision": pa.array([time.time_ns()], pa.uint64()),
        }
    )


def parse_state(table: str, target: str, schema_json: str, truncated_version: int) -> TableState:
    return TableState(table, target, TableSchema.from_dict(json.loads(schema_json)), int(truncated_version))


def applied_row(pipeline: str, batch_id: str, table: str, rows_written: int, high_water: int) -> pa.Table:
    return pa.table(
        {
            "pipeline": [pipeline],
            "batch_id": [batch_id],
            "table_name": [table],
            "rows_written": pa.array([rows_written], pa.uint64()),
            "high_water_version": pa.array([high_water], pa.uint64()),
        }
    )
