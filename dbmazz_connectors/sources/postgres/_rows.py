"""Column-wise decoding of pgoutput Insert/Update/Delete messages of one relation into an Arrow table.

All messages of a chunk are walked together with numpy, one column at a time: at the tuple
position ``p`` of every message, the kind byte (``n`` null, ``u`` unchanged TOAST, ``t`` text),
then for ``t`` a big-endian int32 length and the text. Each column's texts become an Arrow
``string_view`` array pointing into the received buffer (no copy), converted by Arrow casts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ...core.errors import SourceError
from ...core.schema import TableSchema
from ._convert import convert_column

__all__ = ["RelationInfo", "decode_rows", "be_int", "windows", "PG_EPOCH_US", "PADDING"]

PADDING = b"\0" * 16
# _INLINE_MASK[k]: the three inline words of a view keeping the first k bytes (k = 12: all)
_INLINE_MASK = np.array(
    [np.frombuffer(bytes([255] * k + [0] * (12 - k)), "<u4") for k in range(13)], np.uint32
)  # after the last message, so fixed-width reads never run off the buffer

PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01 in microseconds since 1970-01-01

_I, _U, _D = ord("I"), ord("U"), ord("D")
_K, _O = ord("K"), ord("O")
_NULL, _UNCHANGED, _TEXT = ord("n"), ord("u"), ord("t")
_OP_INSERT, _OP_UPDATE, _OP_DELETE = 0, 1, 2


@dataclass(frozen=True)
class RelationInfo:
    """A configured relation as its latest Relation message describes it."""

    relid: int
    schema: TableSchema
    replica_identity: str  # d default, f full, i index, n nothing
    key_indices: tuple[int, ...]  # positions in the message's tuples
    kept: tuple[int, ...] = ()  # for each schema column, its position in the message's tuples
    width: int = 0  # columns in the message's tuples (excluded ones included)

    @property
    def positions(self) -> tuple[int, ...]:
        return self.kept or tuple(range(len(self.schema.columns)))

    @property
    def tuple_width(self) -> int:
        return self.width or len(self.schema.columns)


def windows(b: np.ndarray, dtype: str) -> np.ndarray:
    """``b`` read as overlapping values of ``dtype`` at every byte offset (a view, no copy).

    Indexing it with byte positions gathers unaligned values; ``b`` must end with ``PADDING``.
    """
    size = np.dtype(dtype).itemsize
    return np.ndarray(shape=(len(b) - size + 1,), dtype=dtype, buffer=b, strides=(1,))


def be_int(b: np.ndarray, pos: np.ndarray, size: int, signed: bool = True) -> np.ndarray:
    """Big-endian integers of ``size`` bytes at each of ``pos`` (vectorized; ``b`` padded by >= 16 bytes)."""
    raw = windows(b, f">{'i' if signed else 'u'}{size}")[pos]
    return raw.astype(np.uint64 if size == 8 and not signed else np.int64)


@dataclass
class _Tuples:
    kinds: np.ndarray  # (ncols, n) uint8
    starts: np.ndarray  # (ncols, n) int64: where each text value begins
    lengths: np.ndarray  # (ncols, n) int64
    ends: np.ndarray  # (n,) position after each tuple


def _walk(b: np.ndarray, starts: np.ndarray, ncols: int, table: str) -> _Tuples:
    """Walk TupleData structures starting at ``starts`` (the int16 column count)."""
    n = len(starts)
    counts = be_int(b, starts, 2)
    if n and not (counts == ncols).all():
        raise SourceError(
            f"pgoutput: expected {ncols} columns in tuples of {table}, found {sorted(set(counts))}"
        )
    kinds = np.empty((ncols, n), np.uint8)
    vstarts = np.empty((ncols, n), np.int64)
    vlens = np.empty((ncols, n), np.int64)
    pos = starts + 2
    for k in range(ncols):
        kind = kinds[k] = b[pos]
        is_text = kind == _TEXT
        length = vlens[k] = np.where(is_text, be_int(b, pos + 1, 4), 0)
        vstarts[k] = pos + 5
        pos = pos + np.where(is_text, length + 5, 1)
    if n and not np.isin(kinds, (_NULL, _UNCHANGED, _TEXT)).all():
        raise SourceError(f"pgoutput: unexpected tuple value kind in {table} (binary mode is not requested)")
    return _Tuples(kinds, vstarts, vlens, pos)


def _views(
    b: np.ndarray,
    data: pa.Buffer,
    starts: np.ndarray,
    lengths: np.ndarray,
    valid: np.ndarray,
    view_type: pa.DataType,
) -> pa.Array:
    """A string_view/binary_view array over ``data`` without copying the values.

    A view is four little-endian uint32 words: length, then either the value inline (<= 12
    bytes, zero padded) or its 4-byte prefix, buffer index 0 and offset.
    """
    n = len(starts)
    lens = (lengths if valid.all() else np.where(valid, lengths, 0)).astype(np.uint32)
    views = np.empty((n, 4), np.uint32)
    views[:, 0] = lens
    inline = windows(b, "V12")[starts].view("<u4").reshape(n, 3)
    np.bitwise_and(
        inline, _INLINE_MASK.take(np.minimum(lens, 12), axis=0), out=views[:, 1:]
    )  # take: 3x [] here
    long = np.flatnonzero(lens > 12)
    if len(long):
        views[long, 2] = 0
        views[long, 3] = starts[long]
    validity = None if valid.all() else pa.py_buffer(np.packbits(valid, bitorder="little"))
    null_count = int(n - np.count_nonzero(valid))
    return pa.Array.from_buffers(view_type, n, [validity, pa.py_buffer(views), data], null_count=null_count)


def _key_changed(
    b: np.ndarray, data: pa.Buffer, old: _Tuples, new: _Tuples, keys: tuple[int, ...]
) -> np.ndarray:
    changed = np.zeros(len(old.ends), bool)
    for k in keys:
        changed |= (old.kinds[k] != new.kinds[k]) | (old.lengths[k] != new.lengths[k])
        valid = (old.kinds[k] == _TEXT) & (new.kinds[k] == _TEXT)
        a = _views(b, data, old.starts[k], old.lengths[k], valid, pa.binary_view()).cast(pa.binary())
        c = _views(b, data, new.starts[k], new.lengths[k], valid, pa.binary_view()).cast(pa.binary())
        same = pc.fill_null(pc.equal(a, c), True).to_numpy(zero_copy_only=False)
        changed |= ~same
    return changed


def decode_rows(
    b: np.ndarray,
    data: pa.Buffer,
    starts: np.ndarray,
    types: np.ndarray,
    info: RelationInfo,
    versions: np.ndarray,
    commit_ts: np.ndarray,
) -> pa.Table:
    """Decode I/U/D messages (``starts`` = position of each message's type byte) into ChangeBatch rows.

    A primary-key update becomes a delete of the old key followed by an insert of the new one; an
    unchanged TOAST value is taken from the old tuple under REPLICA IDENTITY FULL, otherwise it is
    null and its column is listed in ``_dbmazz_unknown_columns``.
    """
    schema = info.schema
    ncols = info.tuple_width
    table = schema.qualified_name
    marker = b[starts + 5]
    has_old = (types != _I) & ((marker == _K) | (marker == _O))
    old_start = np.where(has_old, starts + 6, -1)
    new_start = np.where(types == _D, -1, np.where(has_old, -1, starts + 6))
    two = np.zeros(len(starts), bool)
    upd_old = np.flatnonzero(has_old & (types == _U))
    if len(upd_old):
        old = _walk(b, old_start[upd_old], ncols, table)
        new_start[upd_old] = old.ends + 1  # skip the 'N'
        new = _walk(b, new_start[upd_old], ncols, table)
        two[upd_old] = _key_changed(b, data, old, new, info.key_indices)
    return _assemble(b, data, starts, types, info, versions, commit_ts, (old_start, new_start, has_old, two))


def _assemble(b, data, starts, types, info, versions, commit_ts, plan) -> pa.Table:
    old_start, new_start, has_old, two = plan
    schema = info.schema
    ncols = info.tuple_width
    count = 1 + two.astype(np.int64)
    msg = np.repeat(np.arange(len(starts)), count)
    second = np.arange(len(msg)) - (np.cumsum(count) - count)[msg]
    t, is_two = types[msg], two[msg]
    first_of_two = is_two & (second == 0)
    use_old = first_of_two | (t == _D)
    row_tuple = np.where(use_old, old_start[msg], new_start[msg])
    ops = np.where(use_old, _OP_DELETE, np.where((t == _I) | is_two, _OP_INSERT, _OP_UPDATE)).astype(np.int8)
    rows = _walk(b, row_tuple, ncols, schema.qualified_name)
    fill = np.flatnonzero(~use_old & has_old[msg])
    if len(fill) and (rows.kinds[:, fill] == _UNCHANGED).any():
        old = _walk(b, old_start[msg][fill], ncols, schema.qualified_name)
        take = (rows.kinds[:, fill] == _UNCHANGED) & (old.kinds == _TEXT)  # a K tuple has only the key
        for arr, src in ((rows.kinds, old.kinds), (rows.starts, old.starts), (rows.lengths, old.lengths)):
            sub = arr[:, fill]
            sub[take] = src[take]
            arr[:, fill] = sub
    columns = []
    for k, column in zip(info.positions, schema.columns, strict=True):
        valid = rows.kinds[k] == _TEXT
        text = _views(b, data, rows.starts[k], rows.lengths[k], valid, pa.string_view())
        columns.append(convert_column(text, column.type, schema.qualified_name, column.name))
    columns += [
        pa.array(ops, pa.int8()),
        pa.array(versions[msg].astype(np.uint64), pa.uint64()),
        pa.array(commit_ts[msg] + PG_EPOCH_US, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
        _unknown_column(rows.kinds[list(info.kept)] if info.kept else rows.kinds, schema),
    ]
    return pa.Table.from_arrays(columns, schema=schema.arrow_schema())


def _unknown_column(kinds: np.ndarray, schema: TableSchema) -> pa.Array:
    unknown = kinds == _UNCHANGED
    n = kinds.shape[1]
    if not unknown.any():
        return pa.nulls(n, pa.list_(pa.string()))
    names = schema.column_names
    lists: list[list[str] | None] = [None] * n
    for row in np.flatnonzero(unknown.any(axis=0)):
        lists[row] = [names[k] for k in np.flatnonzero(unknown[:, row])]
    return pa.array(lists, pa.list_(pa.string()))
