"""Logical types -> PostgreSQL types and back, and how Arrow columns travel through CSV COPY.

==================  =====================  =====================================================
logical             PostgreSQL             note
==================  =====================  =====================================================
bool                boolean
int8, int16         smallint               (PostgreSQL has no 1-byte integer)
int32, int64        integer, bigint
uint64              numeric(20,0)          the full range up to 2^64-1
float32/float64     real/double precision  NaN and +-Infinity kept
decimal(p,s)        numeric(p,s)           up to 76 digits, exact
decimal             numeric                unbounded; NaN and +-Infinity kept
string, enum        text                   a NUL character cannot be stored: out_of_range policy
json                jsonb                  \\u0000 cannot be stored: out_of_range policy; invalid JSON refused
uuid                uuid
binary              bytea
date                date                   +-infinity kept; outside 4714-11-24 BC..5874897-12-31:
                                           out_of_range policy
time                time
timestamp(tz)       timestamp(tz)          +-infinity kept; before 4714-11-24 BC: out_of_range policy
interval            interval               months, days, microseconds
array<T>            T[]
==================  =====================  =====================================================

Values PostgreSQL cannot hold follow the sink's ``out_of_range`` policy (``value_rule``,
``sinks/_policy.py``) before staging; every other value is staged as CSV text, dates and
timestamps outside years 1..9999 and +-infinity included (in PostgreSQL's own text form).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

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
    civil_from_days,
)
from .._policy import temporal_rule, text_rule
from ..toolkit.types import TypeMapper

__all__ = ["PostgresTypes", "StagedColumn"]

_DAY_US = 86_400_000_000
_PG_MIN_TS_US = -210_866_803_200_000_000  # 4714-11-24 BC 00:00 UTC (Julian day 0), PostgreSQL's lower bound
_PG_MIN_DATE = -2_440_588  # 4714-11-24 BC
_PG_MAX_DATE = 2_145_042_905  # 5874897-12-31
_JSON_NUL = r"\x00|(^|[^\\])((?:\\\\)*)\\u0000"  # a NUL, or a \u0000 escape not itself escaped
_TEXT_MIN_US = -62_135_596_800_000_000  # 0001-01-01: Arrow writes 4-digit years between these two
_TEXT_MAX_US = 253_402_300_799_999_999  # 9999-12-31 23:59:59.999999


@dataclass(frozen=True)
class StagedColumn:
    """One column as COPY receives it: the CSV-writable Arrow array and its (native) staging type."""

    array: pa.Array | pa.ChunkedArray
    staging_type: str


class PostgresTypes(TypeMapper):
    """The PostgreSQL type table (data on ``TypeMapper``); class-level so docs, DDL and tests read one source."""

    SINK = "postgres"
    NATIVE = {
        Kind.BOOL: "boolean",
        Kind.INT8: "smallint",
        Kind.INT16: "smallint",
        Kind.INT32: "integer",
        Kind.INT64: "bigint",
        Kind.UINT64: "numeric(20,0)",
        Kind.FLOAT32: "real",
        Kind.FLOAT64: "double precision",
        Kind.STRING: "text",
        Kind.ENUM: "text",
        Kind.JSON: "jsonb",
        Kind.UUID: "uuid",
        Kind.BINARY: "bytea",
        Kind.DATE: "date",
        Kind.TIME: "time",
        Kind.TIMESTAMP: "timestamp",
        Kind.TIMESTAMPTZ: "timestamptz",
        Kind.INTERVAL: "interval",
    }
    LOGICAL = {
        "boolean": LogicalType.of("bool"),
        "smallint": LogicalType.of("int16"),
        "integer": LogicalType.of("int32"),
        "bigint": LogicalType.of("int64"),
        "numeric(20,0)": LogicalType.of("uint64"),
        "real": LogicalType.of("float32"),
        "double precision": LogicalType.of("float64"),
        "numeric": LogicalType.decimal(),
        "text": LogicalType.of("string"),
        "jsonb": LogicalType.of("json"),
        "uuid": LogicalType.of("uuid"),
        "bytea": LogicalType.of("binary"),
        "date": LogicalType.of("date"),
        "time": LogicalType.of("time"),
        "time without time zone": LogicalType.of("time"),
        "timestamp": LogicalType.of("timestamp"),
        "timestamp without time zone": LogicalType.of("timestamp"),
        "timestamptz": LogicalType.of("timestamptz"),
        "timestamp with time zone": LogicalType.of("timestamptz"),
        "interval": LogicalType.of("interval"),
    }
    VERSION = "numeric(20,0)"
    UNBOUNDED_DECIMAL = "numeric"
    # The values PostgreSQL cannot hold (for the sink's ``out_of_range`` policy)
    RULES = {
        Kind.DATE: temporal_rule(
            Kind.DATE,
            _PG_MIN_DATE,
            _PG_MAX_DATE,
            "a date within 4714-11-24 BC..5874897-12-31 (the PostgreSQL range)",
        ),
        **{
            kind: temporal_rule(
                kind,
                _PG_MIN_TS_US,
                TIMESTAMP_POS_INFINITY,
                "a timestamp from 4714-11-24 BC on (the PostgreSQL range)",
            )
            for kind in (Kind.TIMESTAMP, Kind.TIMESTAMPTZ)
        },
        **dict.fromkeys(
            (Kind.STRING, Kind.ENUM),
            text_rule("a text without NUL (\\x00) characters, which PostgreSQL text cannot hold", "\x00"),
        ),
        Kind.JSON: text_rule(
            "a JSON text without NUL characters or \\u0000 escapes, which jsonb cannot hold",
            _JSON_NUL,
            regex=True,
            replacement="\\1\\2",
        ),
    }

    @classmethod
    def decimal(cls, precision: int, scale: int) -> str:
        return f"numeric({precision},{scale})"

    @classmethod
    def logical(cls, native: str) -> LogicalType:
        """Back from a PostgreSQL type (as ``format_type`` shows it) to the logical type it holds."""
        native = native.strip().lower()
        if native.endswith("[]"):
            return LogicalType.array(cls.logical(native[:-2]))
        if native != "numeric(20,0)" and (match := re.match(r"^numeric\((\d+),(\d+)\)$", native)):
            return LogicalType.decimal(int(match.group(1)), int(match.group(2)))
        return cls.LOGICAL[native]

    # ---- staging
    @classmethod
    def stage(cls, array: pa.ChunkedArray, logical: LogicalType, table: str, column: str) -> StagedColumn:
        """How ``array`` travels through CSV COPY (values PostgreSQL cannot hold were dealt with before)."""
        kind = logical.kind
        if kind in (Kind.TIMESTAMP, Kind.TIMESTAMPTZ):
            return StagedColumn(_timestamp_text(array, logical), cls.native(logical))
        if kind is Kind.DATE:
            return StagedColumn(_date_text(array), "date")
        if kind is Kind.TIME:
            return StagedColumn(_time_text(pc.cast(array, pa.time64("us"))), "time")
        if kind is Kind.BINARY:
            return StagedColumn(_hex(array), "bytea")
        if kind is Kind.INTERVAL:
            return StagedColumn(_interval_text(array), "interval")
        if kind is Kind.ARRAY:
            return StagedColumn(_array_literal(array, logical, table, column), cls.native(logical))
        return StagedColumn(array, cls.native(logical))


def _ints(array, int_type: pa.DataType) -> np.ndarray:
    values = pc.cast(array, int_type)
    values = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    return values.fill_null(0).to_numpy(zero_copy_only=False)


def _date_text(array):
    """Dates as COPY reads them: Arrow's own text for years 1..9999, PostgreSQL's form for the others."""
    days = _ints(array, pa.int32())
    if not days.size or (days.min() >= -719_162 and days.max() <= 2_932_896):
        return array  # Arrow writes these as YYYY-MM-DD, which COPY reads
    text = _civil_text(days.astype(np.int64), None, (DATE_NEG_INFINITY, DATE_POS_INFINITY))
    return pc.if_else(pc.is_null(array), pa.scalar(None, pa.string()), text) if array.null_count else text


def _timestamp_text(array, logical: LogicalType):
    """Timestamps as COPY reads them: Arrow's own text for years 1..9999, PostgreSQL's form for the others."""
    us = _ints(array, pa.int64())
    if not us.size or (us.min() >= _TEXT_MIN_US and us.max() <= _TEXT_MAX_US):
        return array
    days, rest = np.divmod(us, _DAY_US)
    zone = "+00" if logical.kind is Kind.TIMESTAMPTZ else ""
    text = _civil_text(days, (rest, zone), (TIMESTAMP_NEG_INFINITY, TIMESTAMP_POS_INFINITY), us)
    return pc.if_else(pc.is_null(array), pa.scalar(None, pa.string()), text) if array.null_count else text


def _clock_parts(micros: np.ndarray) -> list:
    """``HH``, ``:``, ``MM``, ``:``, ``SS``, ``.``, ``ffffff`` of microseconds since midnight, to join element-wise."""
    seconds, fraction = np.divmod(micros, 1_000_000)
    return [
        _padded(seconds // 3600, 2),
        ":",
        _padded(seconds // 60 % 60, 2),
        ":",
        _padded(seconds % 60, 2),
        ".",
        _padded(fraction, 6),
    ]


def _time_text(array):
    """Times as COPY reads them; 24:00:00 (PostgreSQL's last time) is past what Arrow writes as text."""
    micros = _ints(array, pa.int64())
    if not micros.size or micros.max() < _DAY_US:
        return array
    text = pc.binary_join_element_wise(*_clock_parts(micros), "")
    return pc.if_else(pc.is_null(array), pa.scalar(None, pa.string()), text) if array.null_count else text


def _civil_text(
    days: np.ndarray,
    clock: tuple[np.ndarray, str] | None,
    infinities: tuple[int, int],
    raw: np.ndarray | None = None,
) -> pa.Array:
    """``YYYY-MM-DD[ HH:MM:SS.ffffff[+00]][ BC]`` for each day (and time of day), 'infinity' at the encodings."""
    year, month, day = civil_from_days(days)
    bc = year <= 0
    parts = [_padded(np.where(bc, 1 - year, year), 4), "-", _padded(month, 2), "-", _padded(day, 2)]
    if clock is not None:
        micros, zone = clock
        parts += [" ", *_clock_parts(micros), zone]
    parts.append(pa.array(np.where(bc, " BC", "")))
    text = pc.binary_join_element_wise(*parts, "")
    raw = days if raw is None else raw
    text = pc.if_else(pa.array(raw == infinities[1]), pa.scalar("infinity"), text)
    return pc.if_else(pa.array(raw == infinities[0]), pa.scalar("-infinity"), text)


def _padded(values: np.ndarray, width: int) -> pa.Array:
    return pc.utf8_lpad(pc.cast(pa.array(values.astype(np.int64)), pa.string()), width, "0")


_HEX = np.array([f"{i:02x}".encode() for i in range(256)], dtype="S2")


def _hex(array) -> pa.Array:
    """bytea's text form (``\\x0a1b``), built column-wise from the Arrow buffers."""
    array = array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array
    array = pc.cast(array, pa.large_binary()) if not pa.types.is_large_binary(array.type) else array
    offsets = np.frombuffer(array.buffers()[1], dtype=np.int64)[array.offset : array.offset + len(array) + 1]
    data = np.frombuffer(array.buffers()[2], dtype=np.uint8) if array.buffers()[2] else np.zeros(0, np.uint8)
    body = _HEX[data[offsets[0] : offsets[-1]]].view(np.uint8)
    lengths = np.diff(offsets) * 2 + 2
    out_offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    out = np.empty(out_offsets[-1], dtype=np.uint8)
    starts = out_offsets[:-1]
    out[starts], out[starts + 1] = ord("\\"), ord("x")
    mask = np.ones(out.size, dtype=bool)
    mask[starts], mask[starts + 1] = False, False
    out[mask] = body
    text = pa.LargeStringArray.from_buffers(
        len(array), pa.py_buffer(out_offsets.tobytes()), pa.py_buffer(out.tobytes())
    )
    return (
        pc.if_else(pc.is_null(array), pa.scalar(None, pa.large_string()), text) if array.null_count else text
    )


def _interval_text(array) -> pa.Array:
    array = array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array
    parts = [pc.cast(array.field(name), pa.string()) for name in ("months", "days", "micros")]
    text = pc.binary_join_element_wise(parts[0], " mons ", parts[1], " days ", parts[2], " microseconds", "")
    return pc.if_else(pc.is_null(array), pa.scalar(None, pa.string()), text)


def _array_literal(array, logical: LogicalType, table: str, column: str) -> pa.Array:
    """PostgreSQL's array text form ``{"a",NULL,"b"}``, built column-wise."""
    array = array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array
    assert logical.element is not None
    values = array.flatten()
    element = PostgresTypes.stage(values, logical.element, table, column)
    text = pc.cast(element.array, pa.string())
    quoted = pc.binary_join_element_wise(
        '"', pc.replace_substring(pc.replace_substring(text, "\\", "\\\\"), '"', '\\"'), '"', ""
    )
    items = pc.fill_null(quoted, "NULL")
    lists = pa.ListArray.from_arrays(array.offsets, items, mask=pc.is_null(array))
    return pc.binary_join_element_wise("{", pc.binary_join(lists, ","), "}", "")
