"""Vectorised conversion of one column's binlog values (offsets + lengths into a byte buffer) to Arrow."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from pymysql.charset import charset_by_id

from ...core.types import INTERVAL_ARROW
from ._json import mysql_json_to_text
from .types import ColumnLayout, T, string_max_length

__all__ = ["decode_value_column"]

_EPOCH_MONTH = 1970 * 12
_US = np.int64(1_000_000)
_DAY_US = np.int64(86_400_000_000)


def _gather(arr: np.ndarray, vstart: np.ndarray, width: int) -> np.ndarray:
    """An (n, width) matrix of the bytes at each value."""
    return arr[vstart[:, None] + np.arange(width)]


def _be(arr: np.ndarray, vstart: np.ndarray, width: int, offset: int = 0) -> np.ndarray:
    out = np.zeros(len(vstart), np.int64)
    for k in range(width):
        out = (out << 8) | arr[vstart + offset + k].astype(np.int64)
    return out


def _le(arr: np.ndarray, vstart: np.ndarray, width: int) -> np.ndarray:
    out = np.zeros(len(vstart), np.uint64)
    for k in range(width):
        out |= arr[vstart + k].astype(np.uint64) << np.uint64(8 * k)
    return out


def _validity(isnull: np.ndarray | None) -> pa.Buffer | None:
    return None if isnull is None else pa.array(~isnull).buffers()[1]


def _numpy_array(values: np.ndarray, isnull: np.ndarray | None, arrow_type: pa.DataType) -> pa.Array:
    return pa.array(values, type=arrow_type, mask=isnull)


def _integers(col: ColumnLayout, arr: np.ndarray, vstart: np.ndarray, width: int) -> np.ndarray:
    if width == 3:
        raw = _le(arr, vstart, 3).astype(np.int64)
        return raw if col.unsigned else np.where(raw >= 1 << 23, raw - (1 << 24), raw)
    kind = "u" if col.unsigned else "i"
    return np.ascontiguousarray(_gather(arr, vstart, width)).view(f"<{kind}{width}").reshape(-1)


def _days_from_civil(year: np.ndarray, month: np.ndarray, day: np.ndarray) -> np.ndarray:
    months = (year * 12 + month - 1 - _EPOCH_MONTH).astype("datetime64[M]")
    return months.astype("datetime64[D]").astype(np.int64) + day - 1


def _zero_to_null(zero: np.ndarray, isnull: np.ndarray | None, nullable: bool) -> np.ndarray | None:
    """Zero dates become NULL in nullable columns; NOT NULL columns get the epoch (documented)."""
    if not zero.any() or not nullable:
        return isnull
    return zero if isnull is None else (zero | isnull)


def _fraction_us(arr: np.ndarray, vstart: np.ndarray, fsp: int, offset: int) -> np.ndarray:
    nbytes = (fsp + 1) // 2
    if nbytes == 0:
        return np.zeros(len(vstart), np.int64)
    return _be(arr, vstart, nbytes, offset) * (10 ** (6 - 2 * nbytes))


def _date(col, arr, vstart, isnull):
    raw = _le(arr, vstart, 3).astype(np.int64)
    year, month, day = raw >> 9, (raw >> 5) & 15, raw & 31
    zero = (month == 0) | (day == 0)
    days = _days_from_civil(np.where(zero, 1970, year), np.where(zero, 1, month), np.where(zero, 1, day))
    return pa.array(days.astype(np.int32), pa.date32(), mask=_zero_to_null(zero, isnull, col.nullable))


def _datetime2(col, arr, vstart, isnull, arrow_type):
    packed = _be(arr, vstart, 5) - 0x8000000000
    ymd, hms = packed >> 17, packed & 0x1FFFF
    year_month, day = ymd >> 5, ymd & 31
    year, month = year_month // 13, year_month % 13
    zero = (month == 0) | (day == 0)
    days = _days_from_civil(np.where(zero, 1970, year), np.where(zero, 1, month), np.where(zero, 1, day))
    seconds = (hms >> 12) * 3600 + ((hms >> 6) & 63) * 60 + (hms & 63)
    micros = days * _DAY_US + seconds * _US + _fraction_us(arr, vstart, col.meta, 5)
    micros = np.where(zero, 0, micros)
    return pa.array(micros, arrow_type, mask=_zero_to_null(zero, isnull, col.nullable))


def _timestamp2(col, arr, vstart, isnull, arrow_type):
    seconds = _be(arr, vstart, 4)
    zero = seconds == 0
    micros = seconds * _US + _fraction_us(arr, vstart, col.meta, 4)
    return pa.array(micros, arrow_type, mask=_zero_to_null(zero, isnull, col.nullable))


def _time2(col, arr, vstart, isnull):
    fsp = col.meta
    if fsp >= 5:
        packed = _be(arr, vstart, 6) - 0x800000000000
    else:
        intpart = _be(arr, vstart, 3) - 0x800000
        if fsp == 0:
            packed = intpart << 24
        else:
            nbytes = (fsp + 1) // 2
            frac = _be(arr, vstart, nbytes, 3)
            borrow = (intpart < 0) & (frac != 0)
            intpart = intpart + borrow
            frac = frac - borrow * (1 << (8 * nbytes))
            packed = (intpart << 24) + frac * (10000 if nbytes == 1 else 100)
    sign = np.where(packed < 0, -1, 1)
    mag = np.abs(packed)
    hms, frac_us = mag >> 24, mag & 0xFFFFFF
    seconds = ((hms >> 12) & 0x3FF) * 3600 + ((hms >> 6) & 63) * 60 + (hms & 63)
    micros = sign * (seconds * _US + frac_us)
    zeros = pa.array(np.zeros(len(vstart), np.int32))
    return pa.StructArray.from_arrays(
        [zeros, zeros, pa.array(micros, pa.int64())], fields=list(INTERVAL_ARROW), mask=_mask(isnull)
    )


def _mask(isnull: np.ndarray | None) -> pa.Array | None:
    return None if isnull is None else pa.array(isnull)


_DIG2BYTES = (0, 1, 1, 2, 2, 3, 3, 4, 4, 4)


def _decimal(col, arr, vstart, isnull, arrow_type):
    precision, scale = col.meta >> 8, col.meta & 0xFF
    intg = precision - scale
    groups = [_DIG2BYTES[intg % 9]] + [4] * (intg // 9) + [4] * (scale // 9) + [_DIG2BYTES[scale % 9]]
    digits = [intg % 9] + [9] * (intg // 9) + [9] * (scale // 9) + [scale % 9]
    raw = _gather(arr, vstart, sum(groups)).astype(np.int64)
    negative = (raw[:, 0] & 0x80) == 0
    raw ^= np.where(negative, 0xFF, 0)[:, None]
    raw[:, 0] ^= 0x80
    wide = precision > 18
    unscaled = np.zeros(len(vstart), object if wide else np.int64)
    col_at = 0
    for nbytes, ndigits in zip(groups, digits, strict=True):
        if nbytes == 0:
            continue
        part = np.zeros(len(vstart), np.int64)
        for k in range(nbytes):
            part = (part << 8) | raw[:, col_at + k]
        col_at += nbytes
        unscaled = unscaled * (10**ndigits) + (part.astype(object) if wide else part)
    unscaled = np.where(negative, -unscaled, unscaled)
    if isnull is not None:
        unscaled[isnull] = 0  # whatever bytes a NULL's offset points at
    if wide:  # over 18 digits: exact Python integers, written as 128/256-bit two's complement
        width = arrow_type.byte_width
        data = b"".join(int(v).to_bytes(width, "little", signed=True) for v in unscaled)
        return pa.Array.from_buffers(arrow_type, len(vstart), [_validity(isnull), pa.py_buffer(data)])
    data = np.empty((len(vstart), 2), np.int64)
    data[:, 0] = unscaled
    data[:, 1] = unscaled >> 63
    return pa.Array.from_buffers(arrow_type, len(vstart), [_validity(isnull), pa.py_buffer(data)])


def _binary_buffers(arr, vstart, lengths, isnull):
    offsets = np.zeros(len(vstart) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    total = int(offsets[-1])
    index_type = np.int32 if len(arr) < 2**31 else np.int64  # halves the gather's memory
    idx = np.repeat((vstart - offsets[:-1]).astype(index_type), lengths) + np.arange(total, dtype=index_type)
    data = arr[idx]
    return pa.Array.from_buffers(
        pa.large_binary(), len(vstart), [_validity(isnull), pa.py_buffer(offsets), pa.py_buffer(data)]
    ), data


def _charset(col: ColumnLayout) -> str:
    if col.collation is None:
        return "utf8mb4"
    try:
        return charset_by_id(col.collation).name
    except KeyError:
        return "utf8mb4"


_CP1252 = {b: (bytes([b]).decode("cp1252", errors="ignore") or chr(b)) for b in range(128, 256)}


def _text(col, binary: pa.Array, data: np.ndarray) -> pa.Array:
    charset = _charset(col)
    if charset.startswith("utf8") or charset == "ascii" or not (data >= 0x80).any():
        return binary.cast(pa.large_string()).cast(pa.string())
    if charset == "latin1":
        table = str.maketrans({b: ch for b, ch in _CP1252.items()})
        values = [None if v is None else v.decode("latin-1").translate(table) for v in binary.to_pylist()]
    else:
        values = [None if v is None else v.decode(charset, errors="replace") for v in binary.to_pylist()]
    return pa.array(values, pa.string())


def _fixed_binary(col, arr, vstart, lengths, isnull):
    """BINARY(n): the binlog drops trailing 0x00 bytes; pad back to n as SELECT returns them."""
    width = string_max_length(col)
    k = np.arange(width)
    matrix = np.where(k < lengths[:, None], arr[np.minimum(vstart[:, None] + k, len(arr) - 1)], 0).astype(
        np.uint8
    )
    offsets = (np.arange(len(vstart) + 1, dtype=np.int64) * width).astype(np.int32)
    return pa.Array.from_buffers(
        pa.binary(), len(vstart), [_validity(isnull), pa.py_buffer(offsets), pa.py_buffer(matrix.tobytes())]
    )


def _strings(col, arr, vstart, lengths, isnull, arrow_type):
    if col.type_code == T.STRING and col.is_binary:
        return _fixed_binary(col, arr, vstart, lengths, isnull)
    if col.type_code == T.GEOMETRY:  # 4-byte SRID, then WKB
        vstart, lengths = vstart + 4, np.maximum(lengths - 4, 0)
    binary, data = _binary_buffers(arr, vstart, lengths, isnull)
    if col.type_code == T.JSON:
        return pa.array(
            [None if v is None else mysql_json_to_text(v) for v in binary.to_pylist()], pa.string()
        )
    if pa.types.is_binary(arrow_type):
        return binary.cast(pa.binary())
    return _text(col, binary, data)


def _enum(col, arr, vstart, isnull):
    index = _le(arr, vstart, col.meta).astype(np.int64)
    labels = pa.array(("",) + col.labels, pa.string())
    return labels.take(pa.array(np.minimum(index, len(col.labels)), mask=isnull))


def _set(col, arr, vstart, isnull):
    masks = _le(arr, vstart, col.meta)
    unique, inverse = np.unique(masks, return_inverse=True)
    texts = [",".join(label for bit, label in enumerate(col.labels) if int(m) >> bit & 1) for m in unique]
    return pa.array(texts, pa.string()).take(pa.array(inverse.reshape(-1), mask=isnull))


def decode_value_column(
    col: ColumnLayout,
    arr: np.ndarray,
    vstart: np.ndarray,
    lengths: np.ndarray,
    isnull: np.ndarray | None,
    table: str,
    arrow_type: pa.DataType,
) -> pa.Array:
    """One column of ``len(vstart)`` row images as an Arrow array of ``arrow_type``."""
    code = col.type_code
    if code in (T.TINY, T.SHORT, T.INT24, T.LONG, T.LONGLONG):
        values = _integers(col, arr, vstart, int(lengths[0]) if len(lengths) else 1)
        return _numpy_array(values.astype(arrow_type.to_pandas_dtype()), isnull, arrow_type)
    if code in (T.FLOAT, T.DOUBLE):
        width = 4 if code == T.FLOAT else 8
        values = np.ascontiguousarray(_gather(arr, vstart, width)).view(f"<f{width}").reshape(-1)
        return _numpy_array(values, isnull, arrow_type)
    if code == T.YEAR:
        raw = arr[vstart].astype(np.int16)
        return _numpy_array(np.where(raw == 0, 0, raw + 1900).astype(np.int16), isnull, arrow_type)
    if code == T.NEWDECIMAL:
        return _decimal(col, arr, vstart, isnull, arrow_type)
    if code == T.BIT:
        values = _be(arr, vstart, int(lengths[0]) if len(lengths) else 1).astype(np.uint64)
        return _numpy_array(values != 0 if pa.types.is_boolean(arrow_type) else values, isnull, arrow_type)
    if code == T.DATE:
        return _date(col, arr, vstart, isnull)
    if code == T.DATETIME2:
        return _datetime2(col, arr, vstart, isnull, arrow_type)
    if code == T.TIMESTAMP2:
        return _timestamp2(col, arr, vstart, isnull, arrow_type)
    if code == T.TIME2:
        return _time2(col, arr, vstart, isnull)
    if code == T.ENUM:
        return _enum(col, arr, vstart, isnull)
    if code == T.SET:
        return _set(col, arr, vstart, isnull)
    return _strings(col, arr, vstart, lengths, isnull, arrow_type)
