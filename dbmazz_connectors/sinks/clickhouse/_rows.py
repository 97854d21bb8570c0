"""Turning one compacted row step into the Arrow block ClickHouse receives (tombstones, unknown values).

Everything here is column-wise: values never become Python objects, so no value a Python
``datetime`` cannot hold (a BC date, +-infinity) can break an apply.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ...core.schema import COMMIT_TS_COLUMN, OP_COLUMN, OP_DELETE, UNKNOWN_COLUMN, VERSION_COLUMN, TableSchema
from .types import ClickHouseTypes

__all__ = ["DELETED_COLUMN", "drop_stale", "fill_unknown", "prepare_rows", "to_block"]

DELETED_COLUMN = "_dbmazz_is_deleted"
_ROW = "__dbmazz_row"
_THEIRS = "__dbmazz_current_row"

# (key columns, value columns, the wanted keys as an Arrow table) -> the sink's live rows of those keys
CurrentRows = Callable[[list[str], list[str], pa.Table], pa.Table]


def drop_stale(rows: pa.Table, truncated_version: int) -> tuple[pa.Table, int]:
    """Rows older than the table's last truncate are replays of what it removed: skip them."""
    if not truncated_version or rows.num_rows == 0:
        return rows, 0
    keep = pc.greater_equal(rows.column(VERSION_COLUMN), pa.scalar(truncated_version, pa.uint64()))
    kept = rows.filter(keep)
    return kept, rows.num_rows - kept.num_rows


def prepare_rows(rows: pa.Table, schema: TableSchema) -> pa.Table:
    """The data columns converted for ClickHouse (+-infinity as the range limits); meta columns as they are."""
    columns = {name: rows.column(name) for name in rows.column_names}
    for col in schema.columns:
        columns[col.name] = ClickHouseTypes.prepare(rows.column(col.name), col.type)
    return pa.table(columns, schema=rows.schema)


def fill_unknown(
    rows: pa.Table, schema: TableSchema, current_rows: CurrentRows, kept: tuple[str, ...] = ()
) -> tuple[pa.Table, int]:
    """Give unknown values (unchanged TOAST) the sink's current value; returns rows and values left NULL.

    ``kept``: columns the sink holds but the rows' schema dropped; every upsert keeps their value
    too (not counted as missing). The sink's rows of the affected keys are read as Arrow and
    matched by a hash join; each filled column is rebuilt with one ``take``.
    """
    unknown = _combined(rows.column(UNKNOWN_COLUMN))
    if unknown.null_count == rows.num_rows and not kept:
        return rows, 0
    live = pc.not_equal(rows.column(OP_COLUMN), OP_DELETE).to_numpy(zero_copy_only=False)
    lengths = pc.list_value_length(unknown).fill_null(0).to_numpy(zero_copy_only=False)
    needs = np.flatnonzero(live & ((lengths > 0) | bool(kept)))
    if not needs.size:
        return rows, 0
    names_flat = pc.list_flatten(unknown)
    parents = pc.list_parent_indices(unknown).to_numpy(zero_copy_only=False)
    names = sorted(set(pc.unique(names_flat).to_pylist()) | set(kept))
    key = list(schema.primary_key)
    affected = rows.take(pa.array(needs)).select(key)
    found, current = _current_of(affected, key, names, current_rows, rows.schema)
    columns = {name: rows.column(name) for name in rows.column_names}
    missing = 0
    for name in names:
        wanted = np.zeros(rows.num_rows, dtype=bool)
        if name in kept:
            wanted[needs] = True
        else:
            wanted[parents[pc.equal(names_flat, name).to_numpy(zero_copy_only=False)]] = True
        wanted_affected = wanted[needs]
        use = wanted_affected & found
        missing += 0 if name in kept else int((wanted_affected & ~found).sum())
        if use.any():
            take = np.arange(rows.num_rows, dtype=np.int64)
            take[needs[use]] = rows.num_rows + np.flatnonzero(use)
            merged = pa.chunked_array(
                [*_chunks(columns[name]), *_chunks(current.column(name))], type=rows.schema.field(name).type
            )
            columns[name] = merged.take(pa.array(take))
    settled = np.zeros(rows.num_rows, dtype=bool)
    settled[needs] = True
    columns[UNKNOWN_COLUMN] = pc.if_else(pa.array(settled), pa.scalar(None, unknown.type), unknown)
    return pa.table(columns, schema=rows.schema), missing


def _current_of(
    affected: pa.Table, key: list[str], names: list[str], current_rows: CurrentRows, schema: pa.Schema
) -> tuple[np.ndarray, pa.Table]:
    """Per affected row: whether the sink has its key, and the sink's values of ``names`` (aligned).

    Only keys and row numbers go through the join (Arrow joins carry no nested payload); the
    values follow by ``take``.
    """
    keys = affected.group_by(key, use_threads=False).aggregate([])
    current = current_rows(key, names, keys)
    current = pa.table({n: current.column(n).cast(schema.field(n).type) for n in [*key, *names]})
    mine = affected.append_column(_ROW, pa.array(np.arange(affected.num_rows, dtype=np.int64)))
    theirs = current.select(key).append_column(_THEIRS, pa.array(np.arange(current.num_rows, dtype=np.int64)))
    matched = (
        mine.join(theirs, keys=key, join_type="left outer", use_threads=False).sort_by(_ROW).column(_THEIRS)
    )
    return pc.is_valid(matched).to_numpy(zero_copy_only=False), current.select(names).take(matched)


def _combined(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def _chunks(column: pa.Array | pa.ChunkedArray) -> list[pa.Array]:
    return column.chunks if isinstance(column, pa.ChunkedArray) else [column]


def to_block(rows: pa.Table, schema: TableSchema) -> pa.Table:
    """The insert block: the (prepared) data columns, version, commit time, the delete flag."""
    columns = {col.name: rows.column(col.name) for col in schema.columns}
    # a NULL array arrives as [] (ClickHouse arrays cannot be NULL; documented)
    columns[VERSION_COLUMN] = rows.column(VERSION_COLUMN)
    columns[COMMIT_TS_COLUMN] = rows.column(COMMIT_TS_COLUMN)
    columns[DELETED_COLUMN] = pc.equal(rows.column(OP_COLUMN), OP_DELETE).cast(pa.uint8())
    return pa.table(columns)
