"""Logical types -> DuckDB types and back, and the Arrow/SQL conversions on the way in.

==================  ======================  ==================================================
logical             DuckDB                  note
==================  ======================  ==================================================
bool                BOOLEAN
int8..int64         TINYINT..BIGINT
uint64              UBIGINT
float32/float64     FLOAT/DOUBLE            NaN and +-inf kept
decimal(p<=38,s)    DECIMAL(p,s)
decimal(p>38,s)     VARCHAR                 exact text (DuckDB DECIMAL stops at 38 digits)
decimal             VARCHAR                 unbounded numeric: exact text incl. NaN/Infinity
string              VARCHAR
enum                VARCHAR                 the label (labels may change without DDL)
json                JSON                    invalid JSON is refused
uuid                UUID
binary              BLOB
date                DATE                    +-infinity kept
time                TIME
timestamp           TIMESTAMP               +-infinity kept
timestamptz         TIMESTAMPTZ             +-infinity kept
interval            INTERVAL                months, days, microseconds
array<T>            T[]
==================  ======================  ==================================================
"""

from __future__ import annotations

import re

import pyarrow as pa
import pyarrow.compute as pc

from ...core.types import Kind, LogicalType
from ..toolkit.types import TypeMapper

__all__ = ["DuckDbTypes"]


class DuckDbTypes(TypeMapper):
    """The DuckDB type table (data on ``TypeMapper``); class-level so docs, DDL and tests read one source.

    No ``RULES``: DuckDB holds every value of every logical type (its DATE and TIMESTAMP span the whole
    int32/int64 range with +-infinity, and VARCHAR holds NUL characters)."""

    SINK = "duckdb"
    NATIVE = {
        Kind.BOOL: "BOOLEAN",
        Kind.INT8: "TINYINT",
        Kind.INT16: "SMALLINT",
        Kind.INT32: "INTEGER",
        Kind.INT64: "BIGINT",
        Kind.UINT64: "UBIGINT",
        Kind.FLOAT32: "FLOAT",
        Kind.FLOAT64: "DOUBLE",
        Kind.STRING: "VARCHAR",
        Kind.ENUM: "VARCHAR",
        Kind.JSON: "JSON",
        Kind.UUID: "UUID",
        Kind.BINARY: "BLOB",
        Kind.DATE: "DATE",
        Kind.TIME: "TIME",
        Kind.TIMESTAMP: "TIMESTAMP",
        Kind.TIMESTAMPTZ: "TIMESTAMPTZ",
        Kind.INTERVAL: "INTERVAL",
    }
    LOGICAL = {
        "BOOLEAN": LogicalType.of("bool"),
        "TINYINT": LogicalType.of("int8"),
        "SMALLINT": LogicalType.of("int16"),
        "INTEGER": LogicalType.of("int32"),
        "BIGINT": LogicalType.of("int64"),
        "UBIGINT": LogicalType.of("uint64"),
        "FLOAT": LogicalType.of("float32"),
        "DOUBLE": LogicalType.of("float64"),
        "VARCHAR": LogicalType.of("string"),
        "JSON": LogicalType.of("json"),
        "UUID": LogicalType.of("uuid"),
        "BLOB": LogicalType.of("binary"),
        "DATE": LogicalType.of("date"),
        "TIME": LogicalType.of("time"),
        "TIMESTAMP": LogicalType.of("timestamp"),
        "TIMESTAMP WITH TIME ZONE": LogicalType.of("timestamptz"),
        "TIMESTAMPTZ": LogicalType.of("timestamptz"),
        "INTERVAL": LogicalType.of("interval"),
    }
    MAX_DECIMAL_PRECISION = 38
    WIDE_DECIMAL = UNBOUNDED_DECIMAL = "VARCHAR"  # exact text (DuckDB DECIMAL stops at 38 digits)
    VERSION = "UBIGINT"

    @classmethod
    def logical(cls, native: str) -> LogicalType:
        """Back from a DuckDB type name (as ``DESCRIBE`` shows it) to the logical type it holds."""
        native = native.strip().upper()
        if native.endswith("[]"):
            return LogicalType.array(cls.logical(native[:-2]))
        if match := re.match(r"^DECIMAL\((\d+),\s*(\d+)\)$", native):
            return LogicalType.decimal(int(match.group(1)), int(match.group(2)))
        return cls.LOGICAL[native]

    @classmethod
    def prepare(cls, array: pa.ChunkedArray, logical: LogicalType) -> pa.ChunkedArray:
        """Arrow-side conversion before DuckDB reads the column (DuckDB cannot read decimal256)."""
        if pa.types.is_decimal256(array.type):
            return pc.cast(array, pa.string())
        if pa.types.is_list(array.type) and pa.types.is_decimal256(array.type.value_type):
            return pc.cast(array, pa.list_(pa.string()))
        return array

    @classmethod
    def select_expr(cls, column: str, logical: LogicalType) -> str:
        """SQL turning the registered Arrow column ``column`` (quoted) into the native value."""
        if logical.kind is Kind.INTERVAL:
            return (
                f"CASE WHEN {column} IS NULL THEN NULL ELSE to_months({column}.months) + "
                f"to_days({column}.days) + to_microseconds({column}.micros) END"
            )
        native = cls.native(logical)
        if native in ("JSON", "UUID") or native.startswith(("JSON", "UUID")):
            return f"CAST({column} AS {native})"
        if (
            logical.kind is Kind.ARRAY
            and logical.element is not None
            and logical.element.kind in (Kind.JSON, Kind.UUID, Kind.INTERVAL)
        ):
            return f"CAST({column} AS {native})"
        return column
