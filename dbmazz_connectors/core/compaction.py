"""Per-key compaction and folding by the ordering invariant (DESIGN §2), column-wise in Arrow."""

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
    indexed = data.append_column(_ORDER, pa.array(np.arange(data.num_rows, dtype=np.int64)))
    last = indexed.group_by(list(key), use_threads=False).aggregate([(_ORDER, "max")])
    if last.num_rows == data.num_rows:
        return data  # every key once: nothing to drop, no copy
    keep = np.sort(last.column(f"{_ORDER}_max").to_numpy())
    return data.take(pa.array(keep))


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
    """Resolve unknown values from the same key's earlier change; rare, so done row-wise."""
    unknown = data.column(UNKNOWN_COLUMN).to_pylist()
    rows_with_unknown = [i for i, u in enumerate(unknown) if u]
    keys = list(zip(*(data.column(k).to_pylist() for k in key), strict=True))
    wanted = {keys[i] for i in rows_with_unknown}
    columns = {name: data.column(name).to_pylist() for name in data.column_names}
    ops = columns[OP_COLUMN]
    last_seen: dict[tuple, int] = {}
    for i, k in enumerate(keys):
        if k not in wanted:
            continue
        prev = last_seen.get(k)
        if unknown[i] and prev is not None and ops[prev] != OP_DELETE:
            still = []
            for name in unknown[i]:
                if unknown[prev] and name in unknown[prev]:
                    still.append(name)
                else:
                    columns[name][i] = columns[name][prev]
            unknown[i] = still or None
        last_seen[k] = i
    columns[UNKNOWN_COLUMN] = unknown
    return pa.Table.from_pydict(columns, schema=data.schema)
