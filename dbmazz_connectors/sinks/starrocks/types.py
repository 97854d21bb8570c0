"""Logical types -> StarRocks column types, and each Arrow column as JSON value texts for Stream Load.

==================  =======================  ==================================================
logical             StarRocks                note
==================  =======================  ==================================================
bool                BOOLEAN
int8..int64         TINYINT..BIGINT
uint64              LARGEINT                 the 128-bit integer holds every uint64
float32/float64     FLOAT/DOUBLE             NaN and +-inf follow out_of_range (JSON has none)
decimal(p,s)        DECIMAL(p,s)             p <= 38; wider ones as STRING (exact text)
decimal             STRING                   unbounded numeric: exact text incl. NaN
string, enum        STRING                   the label for enums; labels may change without DDL
json                STRING                   the exact JSON text (parse_json() reads it)
uuid                VARCHAR(36)
binary              STRING                   lower-case hex (JSON cannot carry bytes)
date                DATE                     0000-01-01..9999-12-31; +-infinity as those limits
time                STRING                   HH:MM:SS.ffffff (StarRocks has no TIME column)
timestamp(tz)       DATETIME                 UTC, microseconds; 0000-01-01..9999-12-31 23:59:59.999999;
                                             +-infinity as those limits
interval            STRING                   {"months": m, "days": d, "micros": u}
array<T>            ARRAY<T>
==================  =======================  ==================================================

Primary-key columns must be BOOLEAN, an integer, DATE, DATETIME or a string type (StarRocks Primary
Key tables refuse the others), and are declared first, in key order, NOT NULL.

Everything here is column-wise (pyarrow compute): a value never becomes a Python object.
"""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ...core.types import (
    DATE_NEG_INFINITY,
    DATE_POS_INFINITY,
    TIMESTAMP_NEG_INFINITY,
    TIMESTAMP_POS_INFINITY,
    Kind,
    LogicalType,
)
from .._policy import ValueRule, temporal_rule
from ..toolkit.types import TypeMapper

__all__ = ["StarRocksTypes"]

_ALIASES = {
    "integer": "int",
    "decimal32": "decimal",
    "decimal64": "decimal",
    "decimal128": "decimal",
    "varchar": "varchar",
    "hugeint": "largeint",
}
_CONTROL = [chr(c) for c in range(0x20)]
_HEX = np.array([f"{b:02x}" for b in range(256)], dtype="S2").view(np.uint8).reshape(256, 2)


class StarRocksTypes(TypeMapper):
    """The StarRocks type table (data on ``TypeMapper``); class-level so docs, DDL and tests read one source."""

    SINK = "starrocks"
    NATIVE = {
        Kind.BOOL: "BOOLEAN",
        Kind.INT8: "TINYINT",
        Kind.INT16: "SMALLINT",
        Kind.INT32: "INT",
        Kind.INT64: "BIGINT",
        Kind.UINT64: "LARGEINT",
        Kind.FLOAT32: "FLOAT",
        Kind.FLOAT64: "DOUBLE",
        Kind.STRING: "STRING",
        Kind.BINARY: "STRING",
        Kind.JSON: "STRING",
        Kind.UUID: "VARCHAR(36)",
        Kind.ENUM: "STRING",
        Kind.DATE: "DATE",
        Kind.TIME: "STRING",
        Kind.TIMESTAMP: "DATETIME",
        Kind.TIMESTAMPTZ: "DATETIME",
        Kind.INTERVAL: "STRING",
    }
    KEY_KINDS = frozenset(
        {
            Kind.BOOL,
            Kind.INT8,
            Kind.INT16,
            Kind.INT32,
            Kind.INT64,
            Kind.UINT64,
            Kind.STRING,
            Kind.UUID,
            Kind.ENUM,
            Kind.DATE,
            Kind.TIMESTAMP,
            Kind.TIMESTAMPTZ,
        }
    )
    MAX_DECIMAL_PRECISION = 38
    WIDE_DECIMAL = UNBOUNDED_DECIMAL = "STRING"  # exact text
    VERSION = "LARGEINT"
    MIN_DAY, MAX_DAY = -719_528, 2_932_896  # 0000-01-01, 9999-12-31
    MIN_US, MAX_US = -62_167_219_200_000_000, 253_402_300_799_999_999
    DATE_RANGE = "0000-01-01..9999-12-31"
    TIMESTAMP_RANGE = "0000-01-01 00:00:00..9999-12-31 23:59:59.999999"

    @classmethod
    def decimal(cls, precision: int, scale: int) -> str:
        return f"DECIMAL({precision}, {scale})"

    @classmethod
    def array(cls, element: str) -> str:
        return f"ARRAY<{element}>"

    @classmethod
    def can_be_key(cls, logical: LogicalType) -> bool:
        return logical.kind in cls.KEY_KINDS

    @classmethod
    def can_modify(cls, old: LogicalType, new: LogicalType) -> bool:
        """Whether ``ALTER TABLE ... MODIFY COLUMN`` can take a value column from ``old`` to ``new``
        (scalars only: an array's element type is not changed in place)."""
        return Kind.ARRAY not in (old.kind, new.kind) and cls.native(new) != "STRING"

    @classmethod
    def holds(cls, column: tuple[str, int | None, int | None] | None, logical: LogicalType) -> bool:
        """Whether an information_schema column (data_type, precision, scale) already is ``logical``'s type."""
        if column is None:
            return False
        data_type, precision, scale = column
        have = _ALIASES.get(data_type.lower().split("(")[0].strip(), data_type.lower().split("(")[0].strip())
        want = cls.native(logical).lower().split("(")[0].split("<")[0].strip()
        if want != have:
            return False
        if logical.kind is Kind.DECIMAL and want == "decimal":
            return (precision, scale) == (logical.precision, logical.scale or 0)
        return True

    @classmethod
    def json_values(cls, array: pa.Array | pa.ChunkedArray, logical: LogicalType) -> pa.Array:
        """Each value as its JSON text (``null`` for NULL), as one string array."""
        if isinstance(array, pa.ChunkedArray):
            array = array.combine_chunks()
        return _json_values(array, logical).fill_null("null")


def _json_values(array: pa.Array, logical: LogicalType) -> pa.Array:
    kind = logical.kind
    if kind is Kind.ARRAY:
        assert logical.element is not None
        return _json_lists(array, logical.element)
    if kind in (
        Kind.BOOL,
        Kind.INT8,
        Kind.INT16,
        Kind.INT32,
        Kind.INT64,
        Kind.UINT64,
        Kind.FLOAT32,
        Kind.FLOAT64,
    ):
        return pc.cast(array, pa.string())
    if kind is Kind.DATE:
        days = _limits(
            array,
            pa.int32(),
            (DATE_NEG_INFINITY, DATE_POS_INFINITY),
            (StarRocksTypes.MIN_DAY, StarRocksTypes.MAX_DAY),
        )
        return _quoted(pc.cast(pc.cast(days, pa.date32()), pa.string()))
    if kind in (Kind.TIMESTAMP, Kind.TIMESTAMPTZ):
        micros = _limits(
            array,
            pa.int64(),
            (TIMESTAMP_NEG_INFINITY, TIMESTAMP_POS_INFINITY),
            (StarRocksTypes.MIN_US, StarRocksTypes.MAX_US),
        )
        return _quoted(pc.cast(pc.cast(micros, pa.timestamp("us")), pa.string()))
    if kind is Kind.BINARY:
        return _quoted(_hex(array))
    if kind is Kind.INTERVAL:
        parts = [pc.cast(pc.struct_field(array, name), pa.string()) for name in ("months", "days", "micros")]
        text = pc.binary_join_element_wise(
            '{"months": ', parts[0], ', "days": ', parts[1], ', "micros": ', parts[2], "}", ""
        )
        return _quoted(_escaped(text))
    if kind is Kind.DECIMAL and pa.types.is_decimal(array.type):
        return _quoted(_plain_decimals(pc.cast(array, pa.string())))
    # unbounded decimals (text), text, json, uuid, enum, time: the exact text, quoted
    return _quoted(_escaped(pc.cast(array, pa.string())))


def _plain_decimals(text: pa.Array) -> pa.Array:
    """Arrow writes some decimals in exponent form ("1E-10", "0E-10" for a zero of scale 10), which a
    DECIMAL column may not parse: those rows (only where the scale is above 6) are rewritten plainly."""
    sci = pc.match_substring(text, "E").fill_null(False)
    if not pc.any(sci).as_py():
        return text
    rows = np.flatnonzero(sci.to_numpy(zero_copy_only=False))
    plain = pa.array([format(Decimal(v), "f") for v in text.take(pa.array(rows)).to_pylist()], pa.string())
    positions = np.full(len(text), -1, dtype=np.int64)
    positions[rows] = np.arange(len(rows))
    merged = pa.concat_arrays([text, plain])
    index = np.where(positions >= 0, len(text) + positions, np.arange(len(text)))
    return merged.take(pa.array(index))


def _json_lists(array: pa.Array, element: LogicalType) -> pa.Array:
    if isinstance(array, pa.LargeListArray):
        array = array.cast(pa.list_(array.type.value_type))
    values = StarRocksTypes.json_values(pc.list_flatten(array), element)
    lengths = pc.list_value_length(array).fill_null(0).to_numpy(zero_copy_only=False)
    offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))
    lists = pa.ListArray.from_arrays(offsets, values, mask=array.is_null())
    return pc.binary_join_element_wise("[", pc.binary_join(lists, ","), "]", "")


def _escaped(text: pa.Array) -> pa.Array:
    """JSON string escaping: backslash, quote, and control characters as \\u00XX (checked first: rare)."""
    text = pc.replace_substring(pc.replace_substring(text, "\\", "\\\\"), '"', '\\"')
    if pc.any(pc.match_substring_regex(text, "[\\x00-\\x1f]")).as_py():
        for char in _CONTROL:
            text = pc.replace_substring(text, char, f"\\u{ord(char):04x}")
    return text


def _quoted(text: pa.Array) -> pa.Array:
    return pc.binary_join_element_wise('"', text, '"', "")


def _hex(array: pa.Array) -> pa.Array:
    """Bytes as lower-case hex: every byte looked up at once, the offsets doubled."""
    array = array.cast(pa.binary())
    offsets = np.frombuffer(array.buffers()[1], dtype=np.int32)[array.offset : array.offset + len(array) + 1]
    data = array.buffers()[2]
    raw = (
        np.frombuffer(data, dtype=np.uint8)[offsets[0] : offsets[-1]]
        if data is not None
        else np.zeros(0, np.uint8)
    )
    hexed = _HEX[raw].reshape(-1)
    new_offsets = pa.array((offsets - offsets[0]) * 2, pa.int32())
    return pa.StringArray.from_buffers(
        len(array),
        new_offsets.buffers()[1],
        pa.py_buffer(hexed.tobytes()),
        array.buffers()[0],
        array.null_count,
        0,
    )


def _limits(
    array: pa.Array, physical: pa.DataType, infinities: tuple[int, int], limits: tuple[int, int]
) -> pa.Array:
    """The +-infinity encodings as the range limits; other values as they are (as ``physical``)."""
    raw = pc.cast(array, physical)
    raw = pc.if_else(pc.equal(raw, pa.scalar(infinities[0], physical)), pa.scalar(limits[0], physical), raw)
    return pc.if_else(pc.equal(raw, pa.scalar(infinities[1], physical)), pa.scalar(limits[1], physical), raw)


def _finite_rule() -> ValueRule:
    """NaN and +-inf have no JSON form: refused, clamped (+-inf to the largest finite value, NaN to NULL) or NULL."""

    def outside(values: pa.Array) -> np.ndarray:
        raw = values.to_numpy(zero_copy_only=False)
        return ~np.isfinite(np.asarray(raw, dtype=np.float64)) & ~pc.is_null(values).to_numpy(
            zero_copy_only=False
        )

    def nearest(values: pa.Array) -> pa.Array:
        raw = np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.float64)
        top = float(np.finfo(np.float32 if values.type == pa.float32() else np.float64).max)
        clipped = np.clip(raw, -top, top)
        return pa.array(
            clipped, values.type, mask=np.isnan(raw) | pc.is_null(values).to_numpy(zero_copy_only=False)
        )

    def show(values: pa.Array, index: int) -> str:
        return str(values[index].as_py())

    return ValueRule(
        "a finite number (JSON, which Stream Load reads, has no NaN or infinity)", outside, nearest, show
    )


# The values of each kind StarRocks (through JSON) cannot hold, for the ``out_of_range`` policy
StarRocksTypes.RULES = {
    Kind.DATE: temporal_rule(
        Kind.DATE,
        StarRocksTypes.MIN_DAY,
        StarRocksTypes.MAX_DAY,
        f"a date within {StarRocksTypes.DATE_RANGE} (the StarRocks DATE range)",
    ),
    **{
        kind: temporal_rule(
            kind,
            StarRocksTypes.MIN_US,
            StarRocksTypes.MAX_US,
            f"a timestamp within {StarRocksTypes.TIMESTAMP_RANGE} (the StarRocks DATETIME range)",
        )
        for kind in (Kind.TIMESTAMP, Kind.TIMESTAMPTZ)
    },
    **dict.fromkeys((Kind.FLOAT32, Kind.FLOAT64), _finite_rule()),
}
