"""Per-table buffers of raw row images, turned into one Arrow ChangeBatch chunk at a time."""

from __future__ import annotations

from array import array
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ...core.schema import OP_DELETE, OP_INSERT, OP_UPDATE, TableSchema
from ._rows import PAD, Scanner, decode_images, make_scanner
from .types import ColumnLayout

__all__ = ["Layout", "Txn", "TableBuffer"]

_BEFORE, _AFTER = 3, 4  # image roles of an UPDATE pair


class Txn:
    """A transaction; its commit position and time are known once its commit event is read."""

    __slots__ = ("version", "commit_ts_us")

    def __init__(self) -> None:
        self.version: int | None = None
        self.commit_ts_us = 0


@dataclass(frozen=True)
class Layout:
    """What decoding a table's row images needs, built once per distinct TABLE_MAP."""

    schema: TableSchema
    columns: tuple[ColumnLayout, ...]
    scanner: Scanner
    arrow_types: tuple[pa.DataType, ...]
    key_indexes: tuple[int, ...]

    @classmethod
    def build(cls, schema: TableSchema, columns: tuple[ColumnLayout, ...]) -> Layout:
        arrow_types = tuple(c.type.to_arrow() for c in schema.columns)
        keys = tuple(schema.column_index[k] for k in schema.primary_key)
        return cls(schema, columns, make_scanner(columns), arrow_types, keys)


class TableBuffer:
    """Row images of one table (one layout) in binlog order, with the transaction of each event."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.buf = bytearray()
        self.starts = array("q")
        self.runs: list[tuple[int, int, int, Txn]] = []  # (first image, end image, kind, txn)

    @property
    def images(self) -> int:
        return len(self.starts)

    def add(self, kind: int, body: bytes, offset: int, txn: Txn) -> None:
        """Append the row images of one rows event (``body[offset:]``); kind 0 insert, 1 update, 2 delete."""
        base = len(self.buf)
        self.buf += memoryview(body)[offset:]
        first = len(self.starts)
        self.layout.scanner(self.buf, base, len(self.buf), self.starts.append)
        self.runs.append((first, len(self.starts), kind, txn))

    def take_rows(self) -> pa.Table:
        """Decode and clear the buffer; every buffered transaction must have its version."""
        layout, n = self.layout, len(self.starts)
        starts = np.frombuffer(self.starts, np.int64) if n else np.zeros(0, np.int64)
        columns = decode_images(
            layout.columns,
            bytes(self.buf) + PAD,
            starts,
            layout.schema.qualified_name,
            list(layout.arrow_types),
        )
        roles, versions, commit_ts = self._per_image(n)
        self.buf, self.starts, self.runs = bytearray(), array("q"), []
        emit, ops = _emit_plan(columns, roles, layout.key_indexes)
        if emit is not None:
            columns = [c.take(emit) for c in columns]
            versions, commit_ts = versions[emit], commit_ts[emit]
        meta = [
            pa.array(ops, pa.int8()),
            pa.array(versions, pa.uint64()),
            pa.array(commit_ts, pa.timestamp("us", tz="UTC")),
            pa.nulls(len(ops), pa.list_(pa.string())),
        ]
        return pa.Table.from_arrays(columns + meta, schema=layout.schema.arrow_schema())

    def _per_image(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        roles = np.empty(n, np.int8)
        versions = np.empty(n, np.uint64)
        commit_ts = np.empty(n, np.int64)
        for first, end, kind, txn in self.runs:
            if txn.version is None:
                raise RuntimeError("a row chunk was cut before its transaction's commit was known")
            if kind == 1:
                roles[first:end:2] = _BEFORE
                roles[first + 1 : end : 2] = _AFTER
            else:
                roles[first:end] = OP_INSERT if kind == 0 else OP_DELETE
            versions[first:end] = txn.version
            commit_ts[first:end] = txn.commit_ts_us
        return roles, versions, commit_ts


def _emit_plan(columns: list[pa.Array], roles: np.ndarray, keys: tuple[int, ...]):
    """Which images become rows, and their ops: an update keeps its after image (op update), unless
    its primary key changed: then the before image is a delete and the after image an insert."""
    before = np.flatnonzero(roles == _BEFORE)
    ops = roles.copy()
    if not len(before):
        return None, ops
    changed = np.zeros(len(before), bool)
    for k in keys:
        old, new = columns[k].take(before), columns[k].take(before + 1)
        changed |= ~pc.fill_null(pc.equal(old, new), False).to_numpy(zero_copy_only=False)
    ops[before] = OP_DELETE
    ops[before + 1] = np.where(changed, OP_INSERT, OP_UPDATE)
    keep = np.ones(len(roles), bool)
    keep[before[~changed]] = False
    emit = np.flatnonzero(keep)
    return emit, ops[emit]
