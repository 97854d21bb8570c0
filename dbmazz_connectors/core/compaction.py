"""Per-key compaction and folding by the ordering invariant (docs/architecture.md, "The ordering invariant"), column-wise in Arrow."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .schema import OP_COLUMN, OP_DELETE, OP_INSERT, UNKNOWN_COLUMN, VERSION_COLUMN, TableSchema

__all__ = ["compact", "fold", "conform"]

_ORDER = "__dbmazz_order"


def compact(data: pa.Table, key: list[str] | tuple[str, ...]) -> pa.Table:
    """Keep the last change of each key (source order = row order), in source order.

    Columns a later update did not know (``_dbmazz_unknown_columns``) are filled from the
    key's earlier change in the same input where that one knew them; what stays unknown stays
    listed, so a sink keeps its own value for it.
    """
    if data.num_rows == 0:
        return data
    if not key:
        raise ValueError("expected primary key columns to compact by, got none")
    if UNKNOWN_COLUMN in data.column_names and data.column(UNKNOWN_COLUMN).null_count < data.num_rows:
        data = _fill_unknown(data, list(key))
    if _strictly_increasing(data, key):
        return (
            data  # every key once, proven in one pass: the common serial-key insert batch skips the grouping
        )
    indexed = data.append_column(_ORDER, pa.array(np.arange(data.num_rows, dtype=np.int64)))
    last = indexed.group_by(list(key), use_threads=False).aggregate([(_ORDER, "max")])
    if last.num_rows == data.num_rows:
        return data  # every key once: nothing to drop, no copy
    keep = np.sort(last.column(f"{_ORDER}_max").to_numpy())
    return data.take(pa.array(keep))


def _strictly_increasing(data: pa.Table, key: list[str] | tuple[str, ...]) -> bool:
    """Whether a single integer key column without nulls strictly increases (so no key repeats)."""
    if len(key) != 1:
        return False
    column = data.column(key[0])
    if not pa.types.is_integer(column.type) or column.null_count or data.num_rows < 2:
        return False
    values = column.to_numpy()
    return bool(np.all(values[1:] > values[:-1]))


def fold(state: pa.Table | None, changes: pa.Table, key: list[str] | tuple[str, ...]) -> pa.Table:
    """Merge ``changes`` into ``state`` (live rows with their versions) by the ordering invariant.

    Per key the change with the highest ``_dbmazz_version`` wins (ties: the later one); a winning
    delete removes the key. This is the reference semantics every sink must converge to. It keeps
    no tombstones, so it is only correct when batches are folded in order (as the engine does).
    """
    if state is None or state.num_rows == 0:
        merged = changes
    else:
        merged = pa.concat_tables([state, changes.select(state.column_names)], promote_options="default")
    if merged.num_rows == 0:
        return merged
    order = pa.array(np.arange(merged.num_rows, dtype=np.int64))
    idx = pc.sort_indices(
        pa.table({"v": merged.column(VERSION_COLUMN), "o": order}),
        sort_keys=[("v", "ascending"), ("o", "ascending")],
    )
    result = compact(merged.take(idx), key)
    live = result.filter(pc.not_equal(result.column(OP_COLUMN), OP_DELETE))
    return live.set_column(
        live.column_names.index(OP_COLUMN), OP_COLUMN, pa.array(np.full(live.num_rows, OP_INSERT, np.int8))
    )


def conform(data: pa.Table, schema: TableSchema) -> pa.Table:
    """Project ``data`` onto ``schema``'s columns: new columns as nulls, dropped ones removed."""
    target = schema.arrow_schema()
    columns = []
    for f in target:
        if f.name in data.column_names:
            columns.append(data.column(f.name).cast(f.type))
        else:
            columns.append(pa.nulls(data.num_rows, f.type))
    return pa.Table.from_arrays(columns, schema=target)


def _fill_unknown(data: pa.Table, key: list[str]) -> pa.Table:
    """Resolve unknown values from the same key's earlier changes, column-wise (values never leave Arrow).

    A value unknown in row ``i`` takes the value of the nearest earlier row of the same key that
    knows it, provided no delete of the key lies in between (a delete ends what can be known);
    otherwise it stays unknown. Rows are grouped by key in source order, then per unknown column a
    running maximum finds each row's source row; the column is rebuilt with one ``take``.
    """
    n = data.num_rows
    unknown = _combined(data.column(UNKNOWN_COLUMN))
    names_flat = pc.list_flatten(unknown)
    parents = pc.list_parent_indices(unknown).to_numpy(zero_copy_only=False)
    order, first = _key_groups(data, key)  # ``order``: row indices grouped by key, in source order
    deleted = pc.equal(data.column(OP_COLUMN), OP_DELETE).to_numpy(zero_copy_only=False)[order]
    positions = np.arange(n, dtype=np.int64)
    resolved_flat = np.zeros(len(names_flat), dtype=bool)
    columns = {name: data.column(name) for name in data.column_names}
    for name in pc.unique(names_flat).to_pylist():
        hits = pc.equal(names_flat, name).to_numpy(zero_copy_only=False)
        unknown_rows = np.zeros(n, dtype=bool)
        unknown_rows[parents[hits]] = True
        is_unknown = unknown_rows[order]
        # a row can give its value if it knows it and is no delete; a delete or a key's first row is a barrier
        stop = np.where(~is_unknown & ~deleted | deleted | first, positions, -1)
        before = np.concatenate([[-1], np.maximum.accumulate(stop)[:-1]])
        before[first] = -1
        source = np.where(before >= 0, before, 0)
        can = is_unknown & (before >= 0) & ~is_unknown[source] & ~deleted[source]
        take = np.arange(n, dtype=np.int64)
        take[order[can]] = order[source[can]]
        if can.any():
            columns[name] = columns[name].take(pa.array(take))
        resolved_rows = np.zeros(n, dtype=bool)
        resolved_rows[order[can]] = True
        resolved_flat |= hits & resolved_rows[parents]
    columns[UNKNOWN_COLUMN] = _without(unknown, names_flat, parents, resolved_flat)
    return pa.Table.from_pydict(columns, schema=data.schema)


def _combined(column: pa.ChunkedArray) -> pa.Array:
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def _key_groups(data: pa.Table, key: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Row indices grouped by key (each key's rows in source order) and, per position, whether it starts a key."""
    indexed = data.select(key).append_column(_ORDER, pa.array(np.arange(data.num_rows, dtype=np.int64)))
    groups = indexed.group_by(key, use_threads=False).aggregate([(_ORDER, "list")])
    lists = _combined(groups.column(f"{_ORDER}_list"))
    order = pc.list_flatten(lists).to_numpy(zero_copy_only=False).astype(np.int64)
    starts = lists.offsets.to_numpy(zero_copy_only=False)[:-1]
    first = np.zeros(data.num_rows, dtype=bool)
    first[starts] = True
    return order, first


def _without(unknown: pa.Array, names_flat: pa.Array, parents: np.ndarray, resolved: np.ndarray) -> pa.Array:
    """``unknown`` minus the resolved names; a row left with none becomes null (every value known)."""
    if not resolved.any():
        return unknown
    keep = ~resolved
    n = len(unknown)
    before = np.bincount(parents, minlength=n)
    after = np.bincount(parents[keep], minlength=n)
    offsets = np.concatenate([[0], np.cumsum(after)]).astype(np.int32)
    mask = pc.is_null(unknown).to_numpy(zero_copy_only=False) | ((after == 0) & (before > 0))
    values = names_flat.filter(pa.array(keep))
    return pa.ListArray.from_arrays(pa.array(offsets), values, mask=pa.array(mask)).cast(unknown.type)
