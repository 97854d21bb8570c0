"""Turning one compacted row step into the Arrow block ClickHouse receives (tombstones, unknown values)."""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa
import pyarrow.compute as pc

from ...core.schema import COMMIT_TS_COLUMN, OP_COLUMN, OP_DELETE, UNKNOWN_COLUMN, VERSION_COLUMN, TableSchema
from .types import ClickHouseTypes

__all__ = ["DELETED_COLUMN", "drop_stale", "fill_unknown", "to_block"]

DELETED_COLUMN = "_dbmazz_is_deleted"

# (key columns, value columns, keys as tuples) -> the sink's live rows of those keys, as Arrow
CurrentRows = Callable[[list[str], list[str], list[tuple]], pa.Table]


def drop_stale(rows: pa.Table, truncated_version: int) -> tuple[pa.Table, int]:
    """Rows older than the table's last truncate are replays of what it removed: skip them."""
    if not truncated_version or rows.num_rows == 0:
        return rows, 0
    keep = pc.greater_equal(rows.column(VERSION_COLUMN), pa.scalar(truncated_version, pa.uint64()))
    kept = rows.filter(keep)
    return kept, rows.num_rows - kept.num_rows


def fill_unknown(rows: pa.Table, schema: TableSchema, current_rows: CurrentRows,
                 kept: tuple[str, ...] = ()) -> tuple[pa.Table, int]:
    """Give unknown values (unchanged TOAST) the sink's current value; returns rows and values left NULL.

    ``kept``: columns the sink holds but the rows' schema dropped; every upsert keeps their value
    too (not counted as missing). Rare, so done row-wise on the affected rows only; the others
    stay untouched Arrow.
    """
    unknown_col = rows.column(UNKNOWN_COLUMN)
    if unknown_col.null_count == rows.num_rows and not kept:
        return rows, 0
    unknown = unknown_col.to_pylist()
    ops = rows.column(OP_COLUMN).to_pylist()
    needs = [i for i, u in enumerate(unknown) if (u or kept) and ops[i] != OP_DELETE]
    if not needs:
        return rows, 0
    key = list(schema.primary_key)
    affected = rows.take(pa.array(needs, pa.int64()))
    names = sorted({name for i in needs for name in (unknown[i] or [])} | set(kept))
    values = affected.to_pylist()
    keys = [tuple(r[k] for k in key) for r in values]
    found = {}
    for r in _cast_like(current_rows(key, names, keys), affected.schema).to_pylist():
        found[tuple(r[k] for k in key)] = r
    missing = 0
    for row, k in zip(values, keys, strict=True):
        for name in [*(row[UNKNOWN_COLUMN] or []), *kept]:
            if k in found:
                row[name] = found[k][name]
            elif name not in kept:
                missing += 1
        row[UNKNOWN_COLUMN] = None
    filled = pa.Table.from_pylist(values, schema=rows.schema)
    others = pc.invert(pc.is_in(pa.array(range(rows.num_rows), pa.int64()), value_set=pa.array(needs, pa.int64())))
    return pa.concat_tables([rows.filter(others), filled]), missing


def _cast_like(current: pa.Table, schema: pa.Schema) -> pa.Table:
    columns = {}
    for name in current.column_names:
        target = schema.field(name).type
        columns[name] = current.column(name).cast(target)
    return pa.table(columns)


def to_block(rows: pa.Table, schema: TableSchema) -> pa.Table:
    """The insert block: checked/converted data columns, version, commit time, the delete flag."""
    table = schema.qualified_name
    columns = {}
    for col in schema.columns:
        # a NULL array arrives as [] (ClickHouse arrays cannot be NULL; documented)
        columns[col.name] = ClickHouseTypes.prepare(rows.column(col.name), col.type, table, col.name)
    columns[VERSION_COLUMN] = rows.column(VERSION_COLUMN)
    columns[COMMIT_TS_COLUMN] = rows.column(COMMIT_TS_COLUMN)
    columns[DELETED_COLUMN] = pc.equal(rows.column(OP_COLUMN), OP_DELETE).cast(pa.uint8())
    return pa.table(columns)

