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
date                Date32                                       0000-01-01..9999-12-31; +-infinity as those limits
time                Time64(6)                                    needs ClickHouse >= 25.6
timestamp(tz)       DateTime64(6, 'UTC')                         0000-01-01 00:00:00..9999-12-31 23:59:59.999999;
                                                                 +-infinity as those limits
interval            Tuple(months Int32, days Int32, micros Int64)
array<T>            Array(Nullable(T))                           never Nullable: a NULL array arrives as []
==================  ===========================================  ===========================================

The date ranges are what the bundled server (ClickHouse 26.x) accepts and prints correctly: an
Arrow insert of a Date32 outside it is rejected by the server, and a DateTime64 outside it is
stored but printed and computed wrongly. A finite value outside them follows the sink's
``out_of_range`` policy (``sinks/_policy.py``): refused by default, or clamped to the limits, or NULL.
"""

from __future__ import annotations

import re

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
from .._policy import temporal_rule
from ..toolkit.types import TypeMapper

__all__ = ["ClickHouseTypes"]


class ClickHouseTypes(TypeMapper):
    """The ClickHouse type table (data on ``TypeMapper``); class-level so docs, DDL and tests read one source."""

    SINK = "clickhouse"
    NATIVE = {
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
    LOGICAL = {
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
    # The range the server accepts for Date32 (days since the epoch) and prints correctly for DateTime64(6)
    MIN_DAY, MAX_DAY = -719_528, 2_932_896  # 0000-01-01, 9999-12-31
    MIN_US, MAX_US = (
        -62_167_219_200_000_000,
        253_402_300_799_999_999,
    )  # 0000-01-01 00:00, 9999-12-31 23:59:59.999999
    DATE_RANGE = "0000-01-01..9999-12-31"
    TIMESTAMP_RANGE = "0000-01-01 00:00:00..9999-12-31 23:59:59.999999"
    MAX_DECIMAL_PRECISION = None  # up to 76 digits (Decimal256 beyond 38); sources bring no wider ones
    UNBOUNDED_DECIMAL = "String"  # unbounded numeric: exact text incl. NaN
    VERSION = "UInt64"
    # The values of each kind ClickHouse cannot hold (for the sink's ``out_of_range`` policy)
    RULES = {
        Kind.DATE: temporal_rule(
            Kind.DATE, MIN_DAY, MAX_DAY, f"a date within {DATE_RANGE} (the ClickHouse Date32 range)"
        ),
        Kind.TIMESTAMP: temporal_rule(
            Kind.TIMESTAMP,
            MIN_US,
            MAX_US,
            f"a timestamp within {TIMESTAMP_RANGE} (the ClickHouse DateTime64 range)",
        ),
        Kind.TIMESTAMPTZ: temporal_rule(
            Kind.TIMESTAMPTZ,
            MIN_US,
            MAX_US,
            f"a timestamp within {TIMESTAMP_RANGE} (the ClickHouse DateTime64 range)",
        ),
    }

    @classmethod
    def decimal(cls, precision: int, scale: int) -> str:
        return f"Decimal({precision}, {scale})"

    @classmethod
    def native(cls, logical: LogicalType, nullable: bool = True) -> str:
        """The column type; ``nullable`` wraps it in Nullable where ClickHouse allows that."""
        if logical.kind is Kind.ARRAY:
            assert logical.element is not None
            return f"Array({cls.native(logical.element)})"
        base = cls.scalar(logical)
        base = f"Nullable({base})" if nullable else base
        return f"LowCardinality({base})" if logical.kind is Kind.ENUM else base

    @classmethod
    def logical(cls, native: str) -> LogicalType:
        """Back from a ClickHouse type (as ``system.columns`` shows it) to the logical type it holds."""
        native = native.strip()
        if native.startswith("LowCardinality("):
            inner = cls.logical(native[len("LowCardinality(") : -1])
            return LogicalType.enum() if inner.kind is Kind.STRING else inner
        if native.startswith("Nullable("):
            return cls.logical(native[len("Nullable(") : -1])
        if native.startswith("Array("):
            return LogicalType.array(cls.logical(native[len("Array(") : -1]))
        if match := re.match(r"^Decimal(?:\d+)?\((\d+),\s*(\d+)\)$", native):
            return LogicalType.decimal(int(match.group(1)), int(match.group(2)))
        return cls.LOGICAL[native]

    @classmethod
    def read_expr(cls, column: str, logical: LogicalType) -> str:
        """SQL reading the (quoted) ``column`` back as Arrow the sink can cast to ``logical``'s Arrow type.

        UUIDs as text; times as microseconds (ClickHouse's Arrow output refuses 24:00:00, which
        PostgreSQL has and Time64 holds).
        """
        if logical.kind is Kind.UUID:
            return f"toString({column})"
        if logical.kind is Kind.TIME:
            return f"toInt64(toDecimal64({column}, 6) * 1000000)"
        if logical.kind is Kind.ARRAY and logical.element is not None:
            inner = cls.read_expr("x", logical.element)
            return column if inner == "x" else f"arrayMap(x -> {inner}, {column})"
        return column

    @classmethod
    def prepare(cls, array: pa.ChunkedArray, logical: LogicalType) -> pa.ChunkedArray:
        """Convert one Arrow column for the insert: +-infinity become the range limits.

        Finite values outside the range must have been dealt with (``value_rule``) before.
        """
        kind = logical.kind
        if kind is Kind.ARRAY:
            assert logical.element is not None
            if logical.element.kind not in (Kind.DATE, Kind.TIMESTAMP, Kind.TIMESTAMPTZ):
                return array
            return pa.chunked_array(
                [_map_list(chunk, logical.element) for chunk in array.chunks], type=array.type
            )
        if kind is Kind.DATE:
            return _infinities_to_limits(
                array, pa.int32(), (DATE_NEG_INFINITY, DATE_POS_INFINITY), (cls.MIN_DAY, cls.MAX_DAY)
            )
        if kind in (Kind.TIMESTAMP, Kind.TIMESTAMPTZ):
            return _infinities_to_limits(
                array, pa.int64(), (TIMESTAMP_NEG_INFINITY, TIMESTAMP_POS_INFINITY), (cls.MIN_US, cls.MAX_US)
            )
        return array


def _map_list(chunk: pa.Array, element: LogicalType) -> pa.Array:
    values = ClickHouseTypes.prepare(
        pa.chunked_array([pc.list_flatten(chunk)], type=chunk.type.value_type), element
    ).combine_chunks()
    lengths = pc.list_value_length(chunk).fill_null(0).to_numpy(zero_copy_only=False)
    offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))
    return pa.ListArray.from_arrays(offsets, values, type=chunk.type, mask=chunk.is_null())


def _infinities_to_limits(
    array: pa.ChunkedArray, physical: pa.DataType, infinities: tuple[int, int], limits: tuple[int, int]
) -> pa.ChunkedArray:
    """The +-infinity encodings become the range limits; every other value stays as it is."""
    if len(array) == 0 or array.null_count == len(array):
        return array
    raw = pc.cast(array, physical)
    negative, positive = (pc.equal(raw, pa.scalar(v, physical)) for v in infinities)
    if not (pc.any(negative).as_py() or pc.any(positive).as_py()):
        return array
    raw = pc.if_else(negative, pa.scalar(limits[0], physical), raw)
    raw = pc.if_else(positive, pa.scalar(limits[1], physical), raw)
    return pc.cast(raw, array.type)
