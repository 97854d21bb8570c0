"""The rows of a snapshot's binary COPY as Arrow tables: what is selected for each column, and how it is read.

The values must equal what CDC makes of a column's output text (pgoutput sends the type's output
function; ``_convert.convert_column`` turns it into Arrow). So:

- fixed-width kinds, and ``numeric(p, s)`` with ``p <= 18``, are read from their binary form with
  numpy (big-endian gathers);
- types whose binary form is their output text (text, varchar, char(n), name, json, enums; jsonb
  after a version byte) and bytea (its bytes) are copied out as they are;
- the rest as text: ``::text`` where that cast is PostgreSQL's I/O conversion (the output
  function), ``format('%s', col)`` (always the output function) where a cast function differs
  from it (bool, char(n), "char", inet, cidr) or where the type is a domain of unknown base;
  both then go through ``convert_column`` like CDC's text.

Columns are selected in table order and, where the type allows, without a cast: a SELECT list
that is exactly the table's columns lets PostgreSQL send its rows without a projection step (a
quarter of its CPU for a COPY of the orders table). A row starts with a run of fixed-width
fields; where none of them is NULL that start has one layout, read for a slice of rows in one
gather; rows with a NULL there are walked field by field.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from psycopg import sql

from ...core.errors import SourceError, UnrepresentableValueError
from ...core.schema import Column, TableSchema
from ...core.types import (
    DATE_NEG_INFINITY,
    DATE_POS_INFINITY,
    TIMESTAMP_NEG_INFINITY,
    TIMESTAMP_POS_INFINITY,
    Kind,
)
from ._convert import convert_column
from ._rows import PG_EPOCH_US, windows
from .types import STRING_LIKE

__all__ = ["SnapshotField", "CopyLayout", "copy_layout", "decode_copy_block", "SLICE_ROWS"]

SLICE_ROWS = 16_384  # rows decoded together (a chunk of the table a block becomes)

_FIXED, _TEXT, _NUMERIC = "fixed", "text", "numeric"
_BINARY: dict[Kind, tuple[str, str]] = {  # kind -> (PostgreSQL type, big-endian wire dtype)
    Kind.INT16: ("int2", ">i2"),
    Kind.INT32: ("int4", ">i4"),
    Kind.INT64: ("int8", ">i8"),
    Kind.FLOAT32: ("float4", ">f4"),
    Kind.FLOAT64: ("float8", ">f8"),
    Kind.BOOL: ("bool", "u1"),
    Kind.DATE: ("date", ">i4"),
    Kind.TIME: ("time", ">i8"),
    Kind.TIMESTAMP: ("timestamp", ">i8"),
    Kind.TIMESTAMPTZ: ("timestamptz", ">i8"),
}
_RAW_TEXT = {
    "text": 0,
    "varchar": 0,
    "bpchar": 0,
    "name": 0,
    "json": 0,
    "citext": 0,
    "jsonb": 1,
}  # bytes before it
_TEXT_CAST_STRINGS = (STRING_LIKE - {"inet", "cidr"}) | {"timetz"}
_MAX_INT64_DIGITS = 18  # numeric(p, s) with p up to this is summed in int64
_POW10 = 10 ** np.arange(19, dtype=np.int64)
_NUMERIC_POS, _NUMERIC_NEG = 0x0000, 0x4000  # the other signs are NaN and +-Infinity
_I4 = np.dtype(">i4")
_PADDING = 64  # >= the longest read past a value's start: a numeric's header and 18 digits
_PG_DAYS_FROM_1970 = 10_957  # 2000-01-01, PostgreSQL's epoch for binary dates and timestamps
_I32_MIN, _I32_MAX = np.iinfo(np.int32).min, np.iinfo(np.int32).max
_I64_MIN, _I64_MAX = np.iinfo(np.int64).min, np.iinfo(np.int64).max


@dataclass(frozen=True)
class SnapshotField:
    """One column in the snapshot's COPY: its SELECT expression and how its bytes are read."""

    column: Column
    expression: sql.Composable
    read: str  # _FIXED (a numpy ``wire`` value), _TEXT (bytes after ``skip``), _NUMERIC (binary numeric)
    wire: str = ""
    skip: int = 0

    @functools.cached_property
    def arrow_type(self) -> pa.DataType:
        return self.column.type.to_arrow()

    @functools.cached_property
    def width(self) -> int:
        """The bytes of a fixed-width value."""
        return np.dtype(self.wire).itemsize


@dataclass(frozen=True, eq=False)
class CopyLayout:
    """The SELECT list of a table's snapshot COPY and the common start of its rows."""

    schema: TableSchema
    fields: tuple[SnapshotField, ...]  # in table order
    run: int  # the leading fixed-width fields
    head: np.dtype  # field count, (size, value) of each of the run, then the next field's size

    @functools.cached_property
    def arrow_schema(self) -> pa.Schema:
        return self.schema.arrow_schema()

    @property
    def select_list(self) -> sql.Composable:
        return sql.SQL(", ").join(f.expression for f in self.fields)


def _field(column: Column) -> SnapshotField:
    name = sql.Identifier(column.name)
    ltype, source_type = column.type, column.source_type or ""
    if ltype.kind in _BINARY:
        pg_type, wire = _BINARY[ltype.kind]
        expression = name if source_type == pg_type else sql.SQL("{}::{}").format(name, sql.SQL(pg_type))
        return SnapshotField(column, expression, _FIXED, wire)
    if ltype.kind is Kind.DECIMAL and ltype.precision is not None and ltype.precision <= _MAX_INT64_DIGITS:
        expression = name if source_type == "numeric" else sql.SQL("{}::numeric").format(name)
        return SnapshotField(column, expression, _NUMERIC)
    if source_type in _RAW_TEXT or ltype.kind in (Kind.ENUM, Kind.BINARY):
        return SnapshotField(column, name, _TEXT, skip=_RAW_TEXT.get(source_type, 0))
    if ltype.kind is not Kind.STRING or source_type in _TEXT_CAST_STRINGS:
        return SnapshotField(column, sql.SQL("{}::text").format(name), _TEXT)
    output = sql.SQL("CASE WHEN {} IS NULL THEN NULL ELSE format('%s', {}) END").format(name, name)
    return SnapshotField(column, output, _TEXT)  # format('%s', NULL) is ''


def copy_layout(schema: TableSchema) -> CopyLayout:
    """How each column of ``schema`` is selected and read (binary where it is cheaper, the values CDC makes)."""
    fields = tuple(_field(c) for c in schema.columns)
    run = next((i for i, f in enumerate(fields) if f.read != _FIXED), len(fields))
    head = [("count", ">i2")]
    for k, field in enumerate(fields[:run]):
        head += [(f"size{k}", ">i4"), (f"value{k}", field.wire)]
    if run < len(fields):
        head.append(("next", ">i4"))
    return CopyLayout(schema, fields, run, np.dtype(head))


def decode_copy_block(
    buf: bytearray,
    lengths: Sequence[int],
    layout: CopyLayout,
    version: int,
    commit_ts_us: int,
    slice_rows: int = SLICE_ROWS,
) -> pa.Table:
    """Rows of a binary COPY of ``SELECT <layout.select_list>`` (one block) as snapshot inserts.

    Each row: int16 field count, then per field an int32 length (-1: NULL) and the value. The
    rows are decoded ``slice_rows`` at a time (each slice's values stay in the CPU cache while its
    columns are read); the table has a chunk per slice, one row group when written. ``buf`` is
    padded in place. Every row must end where its length says, or a SourceError is raised.
    """
    lengths = np.asarray(lengths, np.int64)
    buf += bytes(max(_PADDING, layout.head.itemsize))  # fixed-size reads past the last row stay in the buffer
    b = np.frombuffer(buf, np.uint8)
    data = pa.py_buffer(buf)
    ends = np.cumsum(lengths)
    meta = _meta_columns(min(len(lengths), slice_rows), version, commit_ts_us)
    try:
        return pa.concat_tables(
            [
                _decode_rows(b, data, ends[part] - lengths[part], ends[part], layout, meta)
                for part in (
                    slice(first, first + slice_rows) for first in range(0, max(len(lengths), 1), slice_rows)
                )
            ]
        )
    except IndexError:  # a length pointing past the block: the rows are not what the SELECT list says
        raise SourceError(
            f"snapshot of {layout.schema.qualified_name}: a row's fields do not add up to its length",
            hint="report it with the PostgreSQL version and the table's column types",
        ) from None


def _meta_columns(n: int, version: int, commit_ts_us: int) -> list[pa.Array]:
    """``_dbmazz_op`` (insert), ``_dbmazz_version``, ``_dbmazz_commit_ts`` and ``_dbmazz_unknown_columns`` of n rows."""
    return [
        pa.array(np.zeros(n, np.int8), pa.int8()),
        pa.array(np.full(n, version, np.uint64), pa.uint64()),
        pa.array(np.full(n, commit_ts_us, np.int64), pa.timestamp("us", tz="UTC")),
        pa.nulls(n, pa.list_(pa.string())),
    ]


def _decode_rows(
    b: np.ndarray,
    data: pa.Buffer,
    starts: np.ndarray,
    ends: np.ndarray,
    layout: CopyLayout,
    meta: list[pa.Array],
) -> pa.Table:
    table = layout.schema.qualified_name
    head = _gather(b, layout.head, starts)
    if not (head["count"] == len(layout.fields)).all():
        raise SourceError(
            f"snapshot of {table}: expected {len(layout.fields)} columns, "
            f"got {sorted(set(head['count'].tolist()))}"
        )
    columns: list[pa.Array | None] = [None] * len(layout.fields)
    pos, size = _read_run(b, head, starts, layout, columns)
    for index in range(layout.run, len(layout.fields)):
        field = layout.fields[index]
        if field.read == _FIXED and size is None:  # the length and the value in one gather
            record = _gather(b, _record(field.wire), pos)
            size, value = record["size"], record["value"]
            columns[index] = _fixed(value, size, size >= 0, field, table)
        else:
            size = _gather(b, _I4, pos) if size is None else size
            columns[index] = _read_field(b, data, pos + 4, size, field, table)
        pos += 4
        pos += np.maximum(size, 0)
        size = None
    if not (pos == ends).all():
        raise SourceError(
            f"snapshot of {table}: a row's fields do not add up to its length",
            hint="report it with the PostgreSQL version and the table's column types",
        )
    columns += [m.slice(0, len(starts)) for m in meta]
    return pa.Table.from_arrays(columns, schema=layout.arrow_schema)


def _read_run(
    b: np.ndarray, head: np.ndarray, starts: np.ndarray, layout: CopyLayout, columns: list
) -> tuple[np.ndarray, np.ndarray | None]:
    """The leading fixed-width columns from ``head``, rows with a NULL among them walked field by field.

    Returns where each row's next field starts, and that field's length (None: no field follows).
    """
    table = layout.schema.qualified_name
    regular = np.ones(len(starts), bool)
    for k, field in enumerate(layout.fields[: layout.run]):
        regular &= head[f"size{k}"] == field.width
    irregular = None if regular.all() else np.flatnonzero(~regular)
    walk = None if irregular is None else starts[irregular] + 2
    for k, field in enumerate(layout.fields[: layout.run]):
        size, value = head[f"size{k}"], head[f"value{k}"]
        if irregular is not None:  # a NULL before this field: its length and value are elsewhere
            record = _gather(b, _record(field.wire), walk)
            size, value = size.copy(), value.copy()
            size[irregular], value[irregular] = record["size"], record["value"]
            walk += 4 + np.maximum(record["size"], 0)
        columns[k] = _fixed(value, size, size >= 0, field, table)
    pos = starts + 2 + sum(4 + f.width for f in layout.fields[: layout.run])
    if layout.run == len(layout.fields):
        if irregular is not None:
            pos[irregular] = walk
        return pos, None
    size = head["next"]
    if irregular is not None:
        pos[irregular] = walk
        size = size.copy()
        size[irregular] = _gather(b, _I4, walk)
    return pos, size


def _read_field(
    b: np.ndarray, data: pa.Buffer, at: np.ndarray, size: np.ndarray, field: SnapshotField, table: str
) -> pa.Array:
    """One column from the values at ``at`` (``size`` bytes each, -1: NULL)."""
    valid = size >= 0
    if field.read == _FIXED:
        return _fixed(_gather(b, np.dtype(field.wire), at), size, valid, field, table)
    if field.read == _NUMERIC:
        return _numeric(b, at, valid, field, table)
    if field.skip and not (b[at[valid]] == 1).all():
        raise SourceError(
            f"snapshot of {table}: unexpected binary format version in column {field.column.name}",
            hint="report it with the PostgreSQL version",
        )
    if field.column.type.kind is Kind.BINARY:  # bytea's binary form: its bytes
        return _texts(data, at, np.maximum(size, 0), valid, binary=True)
    text = _texts(data, at + field.skip, np.maximum(size - field.skip, 0), valid)
    if field.arrow_type == text.type:  # text, json, enum labels: already what convert_column would return
        return text
    return convert_column(text, field.column.type, table, field.column.name)


def _gather(b: np.ndarray, dtype: np.dtype, at: np.ndarray) -> np.ndarray:
    """The ``dtype`` values at byte positions ``at`` of ``b`` (gathered as plain bytes: 10x faster for records)."""
    return windows(b, f"V{dtype.itemsize}")[at].view(dtype)


@functools.cache
def _record(wire: str) -> np.dtype:
    """A binary COPY field of a fixed-width type: its int32 length, then the value."""
    return np.dtype([("size", ">i4"), ("value", wire)])


@functools.cache
def _numeric_record(precision: int) -> np.dtype:
    """A binary numeric of at most ``precision`` digits: int16 digit count, weight, sign, scale, then up to
    ``ceil(precision / 4) + 1`` base-10000 digits (the integer and the fraction groups)."""
    digits = [(f"d{k}", ">i2") for k in range(-(-precision // 4) + 1)]
    return np.dtype([("ndigits", ">i2"), ("weight", ">i2"), ("sign", ">u2"), ("dscale", ">u2"), *digits])


def _numeric(b: np.ndarray, at: np.ndarray, valid: np.ndarray, field: SnapshotField, table: str) -> pa.Array:
    """``numeric(p, s)``, ``p <= 18``, from its binary form (read in one gather): the digits are base 10000,
    most significant first, the first worth ``10000 ** weight``. NaN and +-Infinity are NULL, as CDC
    makes them of a bounded numeric."""
    ltype = field.column.type
    record = _gather(b, _numeric_record(ltype.precision), at)
    ndigits, weight, sign = (
        record["ndigits"].astype(np.int64),
        record["weight"].astype(np.int64),
        record["sign"],
    )
    finite = valid & ((sign == _NUMERIC_POS) | (sign == _NUMERIC_NEG))
    most = int(ndigits[finite].max()) if finite.any() else 0
    if most > len(record.dtype.names) - 4:
        raise SourceError(
            f"snapshot of {table}.{field.column.name}: a numeric({ltype.precision},{ltype.scale}) value has "
            f"{most} base-10000 digits",
            hint="report it with the PostgreSQL version",
        )
    unscaled = np.zeros(len(at), np.int64)
    for k in range(most):
        digit = record[f"d{k}"].astype(np.int64)
        exponent = 4 * (weight - k) + (ltype.scale or 0)  # of 10 in the unscaled integer; < 0: past the scale
        term = np.where(
            exponent >= 0,
            digit * _POW10[np.minimum(np.maximum(exponent, 0), 18)],
            digit // _POW10[np.minimum(np.maximum(-exponent, 0), 18)],
        )
        unscaled += np.where(finite & (k < ndigits), term, 0)
    np.negative(unscaled, out=unscaled, where=sign == _NUMERIC_NEG)
    words = np.empty((len(at), 2), np.int64)  # decimal128: little-endian two's complement
    words[:, 0], words[:, 1] = unscaled, unscaled >> 63
    validity = None if finite.all() else pa.py_buffer(np.packbits(finite, bitorder="little"))
    return pa.Array.from_buffers(
        field.arrow_type,
        len(at),
        [validity, pa.py_buffer(words)],
        null_count=int(len(at) - np.count_nonzero(finite)),
    )


@functools.lru_cache(maxsize=4)
def _evens(n: int) -> pa.Array:
    return pa.array(np.arange(0, 2 * n, 2, dtype=np.int32))


def _texts(
    data: pa.Buffer, at: np.ndarray, size: np.ndarray, valid: np.ndarray, binary: bool = False
) -> pa.Array:
    """The ``size``-byte texts at ``at`` in ``data`` as a string (or binary) array (one copy; no per-value Python).

    The texts are the even values of a string array over the whole block whose odd values are the
    bytes between them; taking the even ones copies the texts out (5x fewer cycles than string
    views cast to strings, for values longer than a view's 12 inline bytes).
    """
    n = len(at)
    small = len(data) < 2**31
    offsets = np.empty(2 * n + 1, np.int32 if small else np.int64)
    offsets[0:-1:2] = at
    offsets[1::2] = at + size
    offsets[-1] = offsets[-2] if n else 0
    kind = (
        (pa.binary() if small else pa.large_binary())
        if binary
        else (pa.string() if small else pa.large_string())
    )
    spans = pa.Array.from_buffers(kind, 2 * n, [None, pa.py_buffer(offsets), data])
    texts = spans.take(_evens(n))
    if valid.all():
        return texts
    validity = pa.py_buffer(np.packbits(valid, bitorder="little"))
    return pa.Array.from_buffers(
        texts.type, n, [validity, *texts.buffers()[1:]], null_count=int(n - np.count_nonzero(valid))
    )


def _fixed(
    raw: np.ndarray, size: np.ndarray, valid: np.ndarray, field: SnapshotField, table: str
) -> pa.Array:
    """Fixed-width binary values (garbage where null, masked) as the column's Arrow type."""
    width = raw.dtype.itemsize
    if not ((size == width) | ~valid).all():
        raise SourceError(
            f"snapshot of {table}: expected {width}-byte binary values in column "
            f"{field.column.name}, got {sorted(set(size[valid].tolist()))} bytes"
        )
    kind = field.column.type.kind
    if kind is Kind.BOOL:
        values = raw != 0
    elif kind is Kind.DATE:
        values = raw.astype(np.int32)
        plus, minus = values == _I32_MAX, values == _I32_MIN
        values += _PG_DAYS_FROM_1970
        values[plus], values[minus] = DATE_POS_INFINITY, DATE_NEG_INFINITY  # as the text form's +-infinity
    elif kind in (Kind.TIMESTAMP, Kind.TIMESTAMPTZ):
        values = raw.astype(np.int64)
        plus, minus = values == _I64_MAX, values == _I64_MIN
        if (valid & ~plus & (values > _I64_MAX - PG_EPOCH_US)).any():
            raise UnrepresentableValueError(
                table,
                field.column.name,
                "a timestamp after 294246 AD does not fit in microseconds since 1970",
            )
        values += PG_EPOCH_US
        values[plus], values[minus] = TIMESTAMP_POS_INFINITY, TIMESTAMP_NEG_INFINITY
    else:
        values = raw.astype(raw.dtype.newbyteorder("="))
    return pa.array(values, field.arrow_type, mask=None if valid.all() else ~valid)
