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
string, enum        text                   a NUL character cannot be stored: refused
json                jsonb                  invalid JSON or \\u0000 refused
uuid                uuid
binary              bytea
date                date                   +-infinity kept; outside 4713 BC..5874897 AD refused
time                time
timestamp(tz)       timestamp(tz)          +-infinity kept; before 4713 BC refused
interval            interval               months, days, microseconds
array<T>            T[]
==================  =====================  =====================================================
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ...core.errors import UnrepresentableValueError
from ...core.types import (
    DATE_NEG_INFINITY,
    DATE_POS_INFINITY,
    TIMESTAMP_NEG_INFINITY,
    TIMESTAMP_POS_INFINITY,
    Kind,
    LogicalType,
)

__all__ = ["PostgresTypes", "StagedColumn"]

_DAY_US = 86_400_000_000
_PG_MIN_TS_US = -210_866_803_200_000_000  # 4713-11-24 BC 00:00 UTC, PostgreSQL's lower bound
_PG_MIN_DATE = -2_440_588  # 4713-11-24 BC
_PG_MAX_DATE = 2_145_042_906  # 5874897-12-31
_TEXT_MIN_US = -62_135_596_800_000_000  # 0001-01-01: Arrow writes 4-digit years between these two
_TEXT_MAX_US = 253_402_300_799_999_999  # 9999-12-31 23:59:59.999999


@dataclass(frozen=True)
class StagedColumn:
    """One column as COPY receives it: the CSV-writable Arrow array, its staging type, and the SQL
    that turns the staged value ``{}`` into the native one (``"{}"`` when they are the same)."""

    array: pa.Array | pa.ChunkedArray
    staging_type: str
    expr: str = "{}"


class PostgresTypes:
    """The PostgreSQL type table; class-level so docs, DDL and tests read one source."""

    NATIVE: dict[Kind, str] = {
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
    LOGICAL: dict[str, LogicalType] = {
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

    @classmethod
    def native(cls, logical: LogicalType) -> str:
        if logical.kind is Kind.DECIMAL:
            if logical.precision is None:
                return "numeric"
            return f"numeric({logical.precision},{logical.scale or 0})"
        if logical.kind is Kind.ARRAY:
            assert logical.element is not None
            return f"{cls.native(logical.element)}[]"
        return cls.NATIVE[logical.kind]

    @classmethod
    def logical(cls, native: str) -> LogicalType:
        """Back from a PostgreSQL type (as ``format_type`` shows it) to the logical type it holds."""
        native = native.strip().lower()
        if native.endswith("[]"):
            return LogicalType.array(cls.logical(native[:-2]))
        if native != "numeric(20,0)" and (match := re.match(r"^numeric\((\d+),(\d+)\)$", native)):
            return LogicalType.decimal(int(match.group(1)), int(match.group(2)))
        return cls.LOGICAL[native]

    @classmethod
    def same_native(cls, a: LogicalType, b: LogicalType) -> bool:
        return cls.native(a) == cls.native(b)

    # ---- staging
    @classmethod
    def stage(cls, array: pa.ChunkedArray, logical: LogicalType, table: str, column: str) -> StagedColumn:
        """How ``array`` travels through CSV COPY; raises UnrepresentableValueError for values PostgreSQL refuses."""
        kind = logical.kind
        if kind in (Kind.STRING, Kind.ENUM, Kind.JSON):
            _refuse_nul(array, table, column)
        if kind in (Kind.TIMESTAMP, Kind.TIMESTAMPTZ):
            return _stage_timestamp(array, logical, table, column)
        if kind is Kind.DATE:
            return _stage_date(array, table, column)
        if kind is Kind.TIME:
            return StagedColumn(pc.cast(array, pa.time64("us")), "time")
        if kind is Kind.BINARY:
            return StagedColumn(_hex(array), "bytea")
        if kind is Kind.INTERVAL:
            return StagedColumn(_interval_text(array), "interval")
        if kind is Kind.ARRAY:
            return StagedColumn(_array_literal(array, logical, table, column), cls.native(logical))
        return StagedColumn(array, cls.native(logical))


def _refuse_nul(array: pa.ChunkedArray, table: str, column: str) -> None:
    if pc.any(pc.match_substring(array, "\x00")).as_py():
        raise UnrepresentableValueError(table, column, "postgresql text cannot hold a NUL (\\x00) character")


def _ints(array: pa.ChunkedArray, int_type: pa.DataType) -> np.ndarray:
    values = pc.cast(array, int_type).combine_chunks() if isinstance(array, pa.ChunkedArray) else pc.cast(array, int_type)
    return values.fill_null(0).to_numpy(zero_copy_only=False)


def _stage_timestamp(array, logical: LogicalType, table: str, column: str) -> StagedColumn:
    us = _ints(array, pa.int64())
    finite = us[(us != TIMESTAMP_POS_INFINITY) & (us != TIMESTAMP_NEG_INFINITY)]
    if finite.size and finite.min() < _PG_MIN_TS_US:
        raise UnrepresentableValueError(table, column, f"{finite.min()} µs since 1970 is before PostgreSQL's "
                                        "lowest timestamp (4713-11-24 BC)")
    native = PostgresTypes.native(logical)
    if finite.size == us.size and (not us.size or (us.min() >= _TEXT_MIN_US and us.max() <= _TEXT_MAX_US)):
        return StagedColumn(array, native)  # Arrow's own text form, which COPY reads
    epoch = "'1970-01-01 00:00:00+00'::timestamptz" if logical.kind is Kind.TIMESTAMPTZ else "'1970-01-01'::timestamp"
    expr = (f"CASE WHEN {{0}} = {TIMESTAMP_POS_INFINITY} THEN 'infinity'::{native} "
            f"WHEN {{0}} = {TIMESTAMP_NEG_INFINITY} THEN '-infinity'::{native} "
            f"ELSE {epoch} + ({{0}} / {_DAY_US}) * interval '1 day' + ({{0}} % {_DAY_US}) * interval '1 microsecond' END")
    return StagedColumn(pc.cast(array, pa.int64()), "bigint", expr)


def _stage_date(array, table: str, column: str) -> StagedColumn:
    days = _ints(array, pa.int32())
    finite = days[(days != DATE_POS_INFINITY) & (days != DATE_NEG_INFINITY)]
    if finite.size and (finite.min() < _PG_MIN_DATE or finite.max() > _PG_MAX_DATE):
        bad = finite.min() if finite.min() < _PG_MIN_DATE else finite.max()
        raise UnrepresentableValueError(table, column, f"day {bad} since 1970 is outside PostgreSQL's date range "
                                        "(4713-11-24 BC to 5874897-12-31)")
    if finite.size == days.size and (not days.size or (days.min() >= -719162 and days.max() <= 2932896)):
        return StagedColumn(array, "date")
    expr = (f"CASE WHEN {{0}} = {DATE_POS_INFINITY} THEN 'infinity'::date "
            f"WHEN {{0}} = {DATE_NEG_INFINITY} THEN '-infinity'::date ELSE '1970-01-01'::date + {{0}} END")
    return StagedColumn(pc.cast(array, pa.int32()), "integer", expr)


_HEX = np.array([f"{i:02x}".encode() for i in range(256)], dtype="S2")


def _hex(array) -> pa.Array:
    """bytea's text form (``\\x0a1b``), built column-wise from the Arrow buffers."""
    array = array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array
    array = pc.cast(array, pa.large_binary()) if not pa.types.is_large_binary(array.type) else array
    offsets = np.frombuffer(array.buffers()[1], dtype=np.int64)[array.offset: array.offset + len(array) + 1]
    data = np.frombuffer(array.buffers()[2], dtype=np.uint8) if array.buffers()[2] else np.zeros(0, np.uint8)
    body = _HEX[data[offsets[0]: offsets[-1]]].view(np.uint8)
    lengths = np.diff(offsets) * 2 + 2
    out_offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    out = np.empty(out_offsets[-1], dtype=np.uint8)
    starts = out_offsets[:-1]
    out[starts], out[starts + 1] = ord("\\"), ord("x")
    mask = np.ones(out.size, dtype=bool)
    mask[starts], mask[starts + 1] = False, False
    out[mask] = body
    text = pa.LargeStringArray.from_buffers(len(array), pa.py_buffer(out_offsets.tobytes()), pa.py_buffer(out.tobytes()))
    return pc.if_else(pc.is_null(array), pa.scalar(None, pa.large_string()), text) if array.null_count else text


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
    if element.expr != "{}":
        raise UnrepresentableValueError(table, column, "arrays of timestamps/dates outside years 1..9999 "
                                        "or of +-infinity are not supported by the postgresql sink")
    text = pc.cast(element.array, pa.string())
    quoted = pc.binary_join_element_wise(
        '"', pc.replace_substring(pc.replace_substring(text, "\\", "\\\\"), '"', '\\"'), '"', "")
    items = pc.fill_null(quoted, "NULL")
    lists = pa.ListArray.from_arrays(array.offsets, items, mask=pc.is_null(array))
    return pc.binary_join_element_wise("{", pc.binary_join(lists, ","), "}", "")
