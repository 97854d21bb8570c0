"""Stream Load requests of one rows step: the JSON body (built column-wise), the label, the headers.

A step's rows are split into requests that each name the columns they carry:

* tombstones (deleted keys): every column of the sink table, NULL but the key, ``_dbmazz_is_deleted = 1``;
* live rows, grouped by the set of columns they do not know (unchanged TOAST): each group carries
  only its known columns. A group that carries fewer columns than the table is a partial update
  (``partial_update: true``), so the columns it leaves out keep the sink's value; a request never
  mixes full and partial rows.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ...core.schema import COMMIT_TS_COLUMN, OP_COLUMN, OP_DELETE, UNKNOWN_COLUMN, VERSION_COLUMN, TableSchema
from ...core.types import LogicalType
from .types import StarRocksTypes

__all__ = ["DELETED_COLUMN", "Group", "groups_of", "json_body", "label_for", "load_headers"]

DELETED_COLUMN = "_dbmazz_is_deleted"
_VERSION_TYPE = LogicalType.of("uint64")
_TS_TYPE = LogicalType.of("timestamptz")
_LABEL_MAX = 128
_LABEL_BAD = re.compile(r"[^A-Za-z0-9_-]")


@dataclass(frozen=True)
class Group:
    tag: str  # "d" (tombstones) or "u<n>": part of the label
    rows: pa.Table
    columns: tuple[str, ...]  # data columns carried
    unknown: tuple[str, ...]  # columns the rows do not know (counted when the sink has no row)
    partial: bool
    deleted: bool


def groups_of(rows: pa.Table, step_schema: TableSchema, sink_columns: Sequence[str]) -> list[Group]:
    """The requests' row groups of one compacted step (see the module docstring), in a fixed order."""
    deleted = pc.equal(rows.column(OP_COLUMN), OP_DELETE).to_numpy(zero_copy_only=False)
    groups: list[Group] = []
    if deleted.any():
        groups.append(Group("d", rows.filter(pa.array(deleted)), tuple(sink_columns), (), False, True))
    live = ~deleted
    if not live.any():
        return groups
    unknown = pc.binary_join(rows.column(UNKNOWN_COLUMN), "\x1f").fill_null("")
    unknown_np = np.asarray(unknown.to_numpy(zero_copy_only=False), dtype=object)
    for n, names in enumerate(sorted(set(unknown_np[live].tolist()))):
        mask = live & (unknown_np == names)
        missing = tuple(sorted(set(names.split("\x1f")) - {""}))
        columns = tuple(c for c in step_schema.column_names if c not in missing)
        partial = set(columns) != set(sink_columns)
        groups.append(Group(f"u{n}", rows.filter(pa.array(mask)), columns, missing, partial, False))
    return groups


def json_body(group: Group, schema: TableSchema) -> bytes:
    """``[{...},{...}]``: one JSON object per row, assembled column-wise from each column's value texts."""
    n = group.rows.num_rows
    parts: list[pa.Scalar | pa.Array] = []
    for i, name in enumerate(group.columns):
        if group.deleted and name not in schema.primary_key:
            values: pa.Array = pa.nulls(n, pa.string()).fill_null("null")
        else:
            values = StarRocksTypes.json_values(group.rows.column(name), schema.column(name).type)
        parts += [pa.scalar(("{" if i == 0 else ",") + json.dumps(name) + ":"), values]
    parts += [
        pa.scalar(f',"{VERSION_COLUMN}":'),
        StarRocksTypes.json_values(group.rows.column(VERSION_COLUMN), _VERSION_TYPE),
        pa.scalar(f',"{COMMIT_TS_COLUMN}":'),
        StarRocksTypes.json_values(group.rows.column(COMMIT_TS_COLUMN), _TS_TYPE),
        pa.scalar(f',"{DELETED_COLUMN}":{1 if group.deleted else 0}}},'),
    ]
    objects = pc.binary_join_element_wise(*parts, "").cast(pa.large_string())
    # the objects' bytes lie back to back in the data buffer: the body is that buffer, bracketed
    offsets = np.frombuffer(objects.buffers()[1], dtype=np.int64)[objects.offset : objects.offset + n + 1]
    data = memoryview(objects.buffers()[2])[int(offsets[0]) : int(offsets[-1]) - 1]  # without the last comma
    return b"".join((b"[", data, b"]"))


def label_for(pipeline: str, batch_id: str, table: str, step: int, tag: str, part: int) -> str:
    """``dbmazz_<pipeline>_<batch>_<table>_<step><tag>_<part>`` in StarRocks' label alphabet; hashed when long.

    The same (batch, table, request) always gets the same label, so StarRocks answers a repeat
    (after a crash) with "Label Already Exists" instead of loading it twice."""
    raw = f"dbmazz_{pipeline}_{batch_id}_{table}_{step}{tag}_{part}"
    label = _LABEL_BAD.sub("_", raw)
    if len(label) <= _LABEL_MAX and label == raw:
        return label
    digest = hashlib.sha256(raw.encode()).hexdigest()[
        :24
    ]  # sanitising may make two labels equal: hash the original
    return f"{label[: _LABEL_MAX - 25]}_{digest}"


def load_headers(group: Group, label: str, timeout: float) -> dict[str, str]:
    columns = [*group.columns, VERSION_COLUMN, COMMIT_TS_COLUMN, DELETED_COLUMN]
    headers = {
        "label": label,
        "format": "json",
        "strip_outer_array": "true",
        "max_filter_ratio": "0",
        "columns": ",".join(f"`{c}`" for c in columns),
        # a row replaces the stored one only if its version is >= the stored version: the order batches
        # arrive in does not matter (StarRocks' "conditional update")
        "merge_condition": VERSION_COLUMN,
        "timeout": str(max(1, int(timeout))),
    }
    if group.partial:
        headers["partial_update"] = "true"
    return headers
