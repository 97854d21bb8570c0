"""Text-protocol result rows (a snapshot's SELECT) decoded column by column into the same Arrow values as CDC.

A result row is a packet of length-encoded strings (``0xFB`` for NULL). Rows of one block are
concatenated; ``decode_text_rows`` walks the columns, not the rows: for each column it finds every
row's value offset and length with numpy, then turns the text into the Arrow value the binlog
decoder (``_values.py``) gives for the same stored value: integers and decimals through Arrow's
exact casts, temporals from their fixed digit positions (zero dates as CDC has them), BIT from its
big-endian bytes, FLOAT through ``CAST(col AS DOUBLE)`` (its own text has 6 digits, not exact).
The session must use ``time_zone = '+00:00'`` (TIMESTAMP text is in the session's zone).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ...core.types import INTERVAL_ARROW
from ._rows import read_uint_le
from ._values import _US, _binary_buffers, _days_from_civil, _zero_to_null
from .types import ColumnLayout, T

__all__ = ["decode_text_rows", "decode_text_column", "select_expression", "field_mismatch", "PAD"]

PAD = b"\0" * 64  # appended to a block so reads at NULL or short values never leave the buffer
_NULL, _U16, _U24, _U64 = 0xFB, 0xFC, 0xFD, 0xFE
_DAY_US = np.int64(86_400_000_000)
_INTEGERS = frozenset({T.TINY, T.SHORT, T.INT24, T.LONG, T.LONGLONG, T.YEAR})


def select_expression(col: ColumnLayout, quoted: str) -> str:
    """The SELECT expression whose text ``decode_text_rows`` reads for the column."""
    if col.type_code == T.FLOAT:
        return f"CAST({quoted} AS DOUBLE)"  # exact: FLOAT's own text is rounded to 6 digits
    return quoted


# result-set field types (the text protocol's column definitions) each layout is read from
_FIELD_TYPES = {
    T.TINY: {1},
    T.SHORT: {2},
    T.INT24: {9},
    T.LONG: {3},
    T.LONGLONG: {8},
    T.YEAR: {13},
    T.FLOAT: {5},
    T.DOUBLE: {5},
    T.NEWDECIMAL: {0, 246},
    T.BIT: {16},
    T.DATE: {10, 14},
    T.DATETIME2: {12},
    T.TIMESTAMP2: {7},
    T.TIME2: {11},
}
_TEXT_FIELDS = {15, 245, 247, 248, 249, 250, 251, 252, 253, 254, 255}
_DECIMALS = {T.NEWDECIMAL: lambda meta: meta & 0xFF, T.DATETIME2: int, T.TIMESTAMP2: int, T.TIME2: int}


def field_mismatch(columns: tuple[ColumnLayout, ...], fields: list) -> str | None:
    """Why a result's column definitions do not fit the layouts the rows are decoded with (None when they do).

    The layouts come from information_schema before the read: a table altered in between (say a
    DATETIME(6) become DATETIME(3)) would otherwise be decoded with the wrong digits.
    """
    if len(fields) != len(columns):
        return f"expected {len(columns)} columns, the server sent {len(fields)}"
    for col, field in zip(columns, fields, strict=True):
        expected = _FIELD_TYPES.get(col.type_code, _TEXT_FIELDS)
        scale = _DECIMALS.get(col.type_code)
        if field.type_code not in expected or (scale is not None and field.scale != scale(col.meta)):
            return f"column {col.name} is now of field type {field.type_code} with {field.scale} decimals"
    return None


def _fields(arr: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(value start, length, null mask or None) of the length-encoded strings at ``pos``."""
    first = arr[pos].astype(np.int64)
    isnull = first == _NULL
    header = np.ones(len(pos), np.int64)
    lengths = np.where(first < _NULL, first, 0)
    for marker, width in ((_U16, 2), (_U24, 3), (_U64, 8)):
        at = np.flatnonzero(first == marker)
        if len(at):
            lengths[at] = read_uint_le(arr, pos[at] + 1, width).astype(np.int64)
            header[at] = width + 1
    return pos + header, lengths, (isnull if isnull.any() else None)


def _digits(arr: np.ndarray, start: np.ndarray, count: int) -> np.ndarray:
    out = np.zeros(len(start), np.int64)
    for k in range(count):
        out = out * 10 + (arr[start + k].astype(np.int64) - 48)
    return out


def _fraction_us(arr: np.ndarray, start: np.ndarray, fsp: int) -> np.ndarray:
    """Microseconds of the ``fsp`` fraction digits at ``start`` (0 when fsp is 0)."""
    return _digits(arr, start, fsp) * 10 ** (6 - fsp) if fsp else np.zeros(len(start), np.int64)


def _strings(arr, vstart, lengths, isnull) -> pa.Array:
    return _binary_buffers(arr, vstart, lengths, isnull)[0]


def _cast(arr, vstart, lengths, isnull, arrow_type: pa.DataType) -> pa.Array:
    return pc.cast(_strings(arr, vstart, lengths, isnull).cast(pa.large_string()), arrow_type)


def _date(col, arr, vstart, isnull):
    year, month, day = _digits(arr, vstart, 4), _digits(arr, vstart + 5, 2), _digits(arr, vstart + 8, 2)
    zero = (month == 0) | (day == 0)
    days = _days_from_civil(np.where(zero, 1970, year), np.where(zero, 1, month), np.where(zero, 1, day))
    return pa.array(days.astype(np.int32), pa.date32(), mask=_zero_to_null(zero, isnull, col.nullable))


def _datetime(col, arr, vstart, isnull, arrow_type):
    """``YYYY-MM-DD HH:MM:SS[.f]``: DATETIME as written, TIMESTAMP in UTC (the session's zone).

    A zero date is NULL (epoch when NOT NULL) as in CDC; a zero TIMESTAMP is the binlog's 0 seconds.
    """
    year, month, day = _digits(arr, vstart, 4), _digits(arr, vstart + 5, 2), _digits(arr, vstart + 8, 2)
    seconds = (
        _digits(arr, vstart + 11, 2) * 3600 + _digits(arr, vstart + 14, 2) * 60 + _digits(arr, vstart + 17, 2)
    )
    zero = (month == 0) | (day == 0)
    days = _days_from_civil(np.where(zero, 1970, year), np.where(zero, 1, month), np.where(zero, 1, day))
    micros = days * _DAY_US + seconds * _US + _fraction_us(arr, vstart + 20, col.meta)
    micros = np.where(zero, 0, micros)
    return pa.array(micros, arrow_type, mask=_zero_to_null(zero, isnull, col.nullable))


def _time(col, arr, vstart, lengths, isnull):
    """``[-]HHH:MM:SS[.f]`` as an interval of signed microseconds (months = days = 0), as CDC has it."""
    fsp = col.meta
    tail = fsp + 1 if fsp else 0
    end = vstart + lengths
    negative = arr[vstart] == ord("-")
    hours_start = vstart + negative
    hours_len = end - tail - 6 - hours_start
    hours = np.zeros(len(vstart), np.int64)
    for k in range(3):
        more = hours_len > k
        hours = np.where(more, hours * 10 + (arr[hours_start + k].astype(np.int64) - 48), hours)
    seconds = hours * 3600 + _digits(arr, end - tail - 5, 2) * 60 + _digits(arr, end - tail - 2, 2)
    micros = seconds * _US + _fraction_us(arr, end - fsp, fsp)
    micros = np.where(negative, -micros, micros)
    zeros = pa.array(np.zeros(len(vstart), np.int32))
    mask = None if isnull is None else pa.array(isnull)
    return pa.StructArray.from_arrays(
        [zeros, zeros, pa.array(micros, pa.int64())], fields=list(INTERVAL_ARROW), mask=mask
    )


def _bits(col, arr, vstart, isnull, arrow_type):
    width = (col.meta >> 8) + (1 if col.meta & 0xFF else 0)
    values = np.zeros(len(vstart), np.uint64)
    for k in range(width):
        values = (values << np.uint64(8)) | arr[vstart + k].astype(np.uint64)
    return pa.array(values != 0 if pa.types.is_boolean(arrow_type) else values, arrow_type, mask=isnull)


def decode_text_column(
    col: ColumnLayout,
    arr: np.ndarray,
    vstart: np.ndarray,
    lengths: np.ndarray,
    isnull: np.ndarray | None,
    arrow_type: pa.DataType,
) -> pa.Array:
    """One column of text values as the Arrow array the binlog decoder gives for the same values."""
    code = col.type_code
    if code in _INTEGERS or code in (T.NEWDECIMAL, T.DOUBLE):
        return _cast(arr, vstart, lengths, isnull, arrow_type)
    if code == T.FLOAT:  # the text of CAST(col AS DOUBLE): exact, then narrowed like the stored float
        return _cast(arr, vstart, lengths, isnull, pa.float64()).cast(pa.float32())
    if code == T.BIT:
        return _bits(col, arr, vstart, isnull, arrow_type)
    if code == T.DATE:
        return _date(col, arr, vstart, isnull)
    if code in (T.DATETIME2, T.TIMESTAMP2):
        return _datetime(col, arr, vstart, isnull, arrow_type)
    if code == T.TIME2:
        return _time(col, arr, vstart, lengths, isnull)
    if code == T.GEOMETRY:  # 4-byte SRID, then WKB
        vstart, lengths = vstart + 4, np.maximum(lengths - 4, 0)
    values = _strings(arr, vstart, lengths, isnull)
    if pa.types.is_binary(arrow_type):
        return values.cast(pa.binary())
    return values.cast(pa.large_string()).cast(arrow_type)


def decode_text_rows(
    columns: tuple[ColumnLayout, ...], arrow_types: list[pa.DataType], buf: bytes, starts: np.ndarray
) -> list[pa.Array]:
    """Every column of the text rows starting at ``starts`` in ``buf`` (which ends with ``PAD``)."""
    arr = np.frombuffer(buf, np.uint8)
    pos = np.asarray(starts, np.int64)
    out = []
    for col, arrow_type in zip(columns, arrow_types, strict=True):
        vstart, lengths, isnull = _fields(arr, pos)
        out.append(decode_text_column(col, arr, vstart, lengths, isnull, arrow_type))
        pos = vstart + lengths
    return out
