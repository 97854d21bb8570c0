"""Logical types -> ClickHouse types and back, and the checks/conversions of Arrow columns on the way in.

==================  ===========================================  ===========================================
logical             ClickHouse (non-key columns are Nullable)    note
==================  ===========================================  ===========================================
bool                Bool
int8..int64         Int8..Int64
uint64              UInt64
float32/float64     Float32/Float64                              NaN and +-inf kept
decimal(p,s)        Decimal(p,s)                                 p <= 76 (Decimal256 beyond 38)
decimal             String                                       unbounded numeric: exact text incl. NaN
string, binary      String                                       bytes kept as they are
json                String                                       the exact JSON text (use JSONExtract*)
uuid                UUID
enum                LowCardinality(String)                       the label; labels may change without DDL
date                Date32                                       1900-01-01..2299-12-31; +-infinity clamped
time                Time64(6)                                    needs ClickHouse >= 25.6
timestamp(tz)       DateTime64(6, 'UTC')                         1900-01-01..2299-12-31 23:59:59.999999;
                                                                 +-infinity clamped to those limits
interval            Tuple(months Int32, days Int32, micros Int64)
array<T>            Array(Nullable(T))                           never Nullable: a NULL array arrives as []
==================  ===========================================  ===========================================

A finite date or timestamp outside the range is refused (``UnrepresentableValueError``): ClickHouse
would store it but its date functions are only defined inside it.
"""

from __future__ import annotations

import re

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

__all__ = ["ClickHouseTypes"]


class ClickHouseTypes:
    """The ClickHouse type table; class-level so docs, DDL and tests read one source."""

    NATIVE: dict[Kind, str] = {
        Kind.BOOL: "Bool",
        Kind.INT8: "Int8",
        Kind.INT16: "Int16",
        Kind.INT32: "Int32",
        Kind.INT64: "Int64",
        Kind.UINT64: "UInt64",
        Kind.FLOAT32: "Float32",
        Kind.FLOAT64: "Float64",
        Kind.STRING: "String",
        Kind.BINARY: "String",
        Kind.JSON: "String",
        Kind.UUID: "UUID",
        Kind.ENUM: "String",  # wrapped in LowCardinality by native()
        Kind.DATE: "Date32",
        Kind.TIME: "Time64(6)",
        Kind.TIMESTAMP: "DateTime64(6, 'UTC')",
        Kind.TIMESTAMPTZ: "DateTime64(6, 'UTC')",
        Kind.INTERVAL: "Tuple(months Int32, days Int32, micros Int64)",
    }
    LOGICAL: dict[str, LogicalType] = {
        "Bool": LogicalType.of("bool"),
        "Int8": LogicalType.of("int8"),
        "Int16": LogicalType.of("int16"),
        "Int32": LogicalType.of("int32"),
        "Int64": LogicalType.of("int64"),
        "UInt64": LogicalType.of("uint64"),
        "Float32": LogicalType.of("float32"),
        "Float64": LogicalType.of("float64"),
        "String": LogicalType.of("string"),
        "UUID": LogicalType.of("uuid"),
        "Date32": LogicalType.of("date"),
        "Time64(6)": LogicalType.of("time"),
        "DateTime64(6, 'UTC')": LogicalType.of("timestamptz"),
        "Tuple(months Int32, days Int32, micros Int64)": LogicalType.of("interval"),
    }
    MAX_DECIMAL_PRECISION = 76
    # Documented range of Date32 and DateTime64 (days / microseconds since the epoch)
    MIN_DAY, MAX_DAY = -25_567, 120_529  # 1900-01-01, 2299-12-31
    MIN_US, MAX_US = -2_208_988_800_000_000, 10_413_791_999_999_999  # 1900-01-01 00:00, 2299-12-31 23:59:59.999999

    @classmethod
    def native(cls, logical: LogicalType, nullable: bool = True) -> str:
        """The column type; ``nullable`` wraps it in Nullable where ClickHouse allows that."""
        if logical.kind is Kind.ARRAY:
            assert logical.element is not None
            return f"Array({cls.native(logical.element)})"
        if logical.kind is Kind.DECIMAL:
            base = "String" if logical.precision is None else f"Decimal({logical.precision}, {logical.scale or 0})"
        else:
            base = cls.NATIVE[logical.kind]
        base = f"Nullable({base})" if nullable else base
        return f"LowCardinality({base})" if logical.kind is Kind.ENUM else base

    @classmethod
    def logical(cls, native: str) -> LogicalType:
        """Back from a ClickHouse type (as ``system.columns`` shows it) to the logical type it holds."""
        native = native.strip()
        if native.startswith("LowCardinality("):
            inner = cls.logical(native[len("LowCardinality("):-1])
            return LogicalType.enum() if inner.kind is Kind.STRING else inner
        if native.startswith("Nullable("):
            return cls.logical(native[len("Nullable("):-1])
        if native.startswith("Array("):
            return LogicalType.array(cls.logical(native[len("Array("):-1]))
        if match := re.match(r"^Decimal(?:\d+)?\((\d+),\s*(\d+)\)$", native):
            return LogicalType.decimal(int(match.group(1)), int(match.group(2)))
        return cls.LOGICAL[native]

    @classmethod
    def same_native(cls, a: LogicalType, b: LogicalType) -> bool:
        return cls.native(a) == cls.native(b)

    @classmethod
    def prepare(cls, array: pa.ChunkedArray, logical: LogicalType, table: str, column: str) -> pa.ChunkedArray:
        """Check and convert one Arrow column before the insert; raise UnrepresentableValueError."""
        kind = logical.kind
        if kind is Kind.ARRAY:
            assert logical.element is not None
            if logical.element.kind not in (Kind.DATE, Kind.TIMESTAMP, Kind.TIMESTAMPTZ, Kind.ARRAY):
                return array
            return pa.chunked_array([_map_list(chunk, logical.element, table, column) for chunk in array.chunks],
                                    type=array.type)
        if kind is Kind.DATE:
            return _clamp(array, pa.int32(), (DATE_NEG_INFINITY, DATE_POS_INFINITY), (cls.MIN_DAY, cls.MAX_DAY),
                          table, column, "date", "1900-01-01..2299-12-31")
        if kind in (Kind.TIMESTAMP, Kind.TIMESTAMPTZ):
            return _clamp(array, pa.int64(), (TIMESTAMP_NEG_INFINITY, TIMESTAMP_POS_INFINITY), (cls.MIN_US, cls.MAX_US),
                          table, column, "timestamp", "1900-01-01 00:00:00..2299-12-31 23:59:59.999999")
        return array


def _map_list(chunk: pa.Array, element: LogicalType, table: str, column: str) -> pa.Array:
    if isinstance(chunk, pa.ChunkedArray):
        chunk = chunk.combine_chunks()
    values = ClickHouseTypes.prepare(pa.chunked_array([chunk.values], type=chunk.type.value_type), element,
                                     table, column).combine_chunks()
    return pa.ListArray.from_arrays(chunk.offsets, values, type=chunk.type, mask=chunk.is_null())


def _clamp(array: pa.ChunkedArray, physical: pa.DataType, infinities: tuple[int, int], limits: tuple[int, int],
           table: str, column: str, what: str, described: str) -> pa.ChunkedArray:
    """Clamp the +-infinity encodings to the limits; refuse other values outside them."""
    if len(array) == 0 or array.null_count == len(array):
        return array
    target_type = array.type
    raw = pc.cast(array, physical)
    values = np.asarray(raw.fill_null(0).to_numpy(zero_copy_only=False))
    low, high = limits
    outside = ((values < low) | (values > high)) & (values != infinities[0]) & (values != infinities[1])
    if outside.any():
        bad = pa.array([values[np.argmax(outside)]], physical).cast(target_type)[0]
        raise UnrepresentableValueError(
            table, column, f"expected a {what} within {described} (the ClickHouse range), found {bad}")
    if not ((values == infinities[0]) | (values == infinities[1])).any():
        return array
    clamped = np.clip(values, low, high)
    mask = raw.is_null().to_numpy(zero_copy_only=False)
    return pa.chunked_array([pa.array(clamped, physical, mask=mask).cast(target_type)])
