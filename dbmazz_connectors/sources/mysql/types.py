"""MySQL/MariaDB column types: binlog type codes, physical layouts and the mapping onto logical types.

==========================================  ===========================  ====================================
native type                                 logical type                 notes
==========================================  ===========================  ====================================
tinyint / smallint / mediumint / int        int8 / int16 / int32 / int32  unsigned: widened to the next size
bigint                                      int64                        bigint unsigned -> uint64
decimal(p,s)                                decimal(p,s)                 exact, decoded from the binary form
float / double                              float32 / float64
bit(1) / bit(n)                             bool / uint64
year                                        int16                        0000 -> 0
date                                        date                         zero date -> NULL (epoch if NOT NULL)
datetime(fsp)                               timestamp                    zero date -> NULL (epoch if NOT NULL)
timestamp(fsp)                              timestamptz (UTC)            0 -> NULL (epoch if NOT NULL)
time(fsp)                                   interval                     signed microseconds, -838:59:59..838:59:59
char / varchar / *text                      string                       utf8mb4, utf8mb3, latin1 (cp1252), ascii
binary / varbinary / *blob                  binary                       binary(n) right-padded with 0x00 to n
json                                        json                         MySQL binary JSON -> text; MariaDB: text
enum                                        enum(labels)                 the label; '' for the invalid value 0
set                                         string                       labels joined by ',' in definition order
geometry (all subtypes)                     binary                       WKB (the 4-byte SRID prefix removed)
==========================================  ===========================  ====================================
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ...core.errors import UnmappableTypeError
from ...core.schema import Column
from ...core.types import Kind, LogicalType

__all__ = [
    "T",
    "ColumnLayout",
    "logical_type",
    "native_name",
    "decimal_size",
    "labels_from_column_type",
    "string_max_length",
    "fixed_width",
    "length_prefix",
    "column_from_layout",
    "BINARY_COLLATION",
]


class T:
    """Binlog column type codes (``enum_field_types``)."""

    DECIMAL, TINY, SHORT, LONG, FLOAT, DOUBLE, NULL, TIMESTAMP = 0, 1, 2, 3, 4, 5, 6, 7
    LONGLONG, INT24, DATE, TIME, DATETIME, YEAR, NEWDATE, VARCHAR, BIT = 8, 9, 10, 11, 12, 13, 14, 15, 16
    TIMESTAMP2, DATETIME2, TIME2 = 17, 18, 19
    JSON, NEWDECIMAL, ENUM, SET = 245, 246, 247, 248
    TINY_BLOB, MEDIUM_BLOB, LONG_BLOB, BLOB, VAR_STRING, STRING, GEOMETRY = 249, 250, 251, 252, 253, 254, 255


BINARY_COLLATION = 63
NUMERIC_TYPES = frozenset({T.TINY, T.SHORT, T.INT24, T.LONG, T.LONGLONG, T.FLOAT, T.DOUBLE, T.NEWDECIMAL})
CHARACTER_TYPES = frozenset({T.STRING, T.VAR_STRING, T.VARCHAR, T.BLOB})
_DIG2BYTES = (0, 1, 1, 2, 2, 3, 3, 4, 4, 4)
_INT_WIDTH = {T.TINY: 1, T.SHORT: 2, T.INT24: 3, T.LONG: 4, T.LONGLONG: 8}
_INT_NAMES = {
    T.TINY: "tinyint",
    T.SHORT: "smallint",
    T.INT24: "mediumint",
    T.LONG: "int",
    T.LONGLONG: "bigint",
}
_INT_LOGICAL = {
    (T.TINY, False): Kind.INT8,
    (T.TINY, True): Kind.INT16,
    (T.SHORT, False): Kind.INT16,
    (T.SHORT, True): Kind.INT32,
    (T.INT24, False): Kind.INT32,
    (T.INT24, True): Kind.INT32,
    (T.LONG, False): Kind.INT32,
    (T.LONG, True): Kind.INT64,
    (T.LONGLONG, False): Kind.INT64,
    (T.LONGLONG, True): Kind.UINT64,
}
_BLOB_NAMES = {1: "tiny", 2: "", 3: "medium", 4: "long"}


@dataclass(frozen=True)
class ColumnLayout:
    """One column as a TABLE_MAP event describes it (``meta`` is the type's binlog metadata).

    ``name``, ``labels`` and the primary key come with ``binlog_row_metadata=FULL`` only.
    """

    type_code: int
    meta: int
    nullable: bool
    unsigned: bool = False
    collation: int | None = None
    name: str | None = None
    labels: tuple[str, ...] = ()
    is_json: bool = False  # MariaDB JSON (a longtext with a json_valid check), known from information_schema

    @property
    def is_binary(self) -> bool:
        return self.collation == BINARY_COLLATION


def decimal_size(precision: int, scale: int) -> int:
    """Bytes of a DECIMAL(p,s) in MySQL's binary form (9 digits per 4 bytes)."""
    intg = precision - scale
    return (intg // 9) * 4 + _DIG2BYTES[intg % 9] + (scale // 9) * 4 + _DIG2BYTES[scale % 9]


def fixed_width(col: ColumnLayout) -> int | None:
    """The column's width in a row image, or None when it is length-prefixed."""
    code, meta = col.type_code, col.meta
    if code in _INT_WIDTH:
        return _INT_WIDTH[code]
    simple = {T.FLOAT: 4, T.DOUBLE: 8, T.YEAR: 1, T.DATE: 3, T.TIMESTAMP: 4, T.DATETIME: 8, T.TIME: 3}
    if code in simple:
        return simple[code]
    if code == T.NEWDECIMAL:
        return decimal_size(meta >> 8, meta & 0xFF)
    if code == T.BIT:
        return ((meta >> 8) * 8 + (meta & 0xFF) + 7) // 8
    base = {T.TIMESTAMP2: 4, T.DATETIME2: 5, T.TIME2: 3}
    if code in base:
        return base[code] + (meta + 1) // 2
    if code in (T.ENUM, T.SET):
        return meta & 0xFF
    return None


def length_prefix(col: ColumnLayout) -> int:
    """Bytes of the length prefix of a variable-width column."""
    code, meta = col.type_code, col.meta
    if code in (T.VARCHAR, T.VAR_STRING):
        return 1 if meta < 256 else 2
    if code == T.STRING:
        return 1 if _string_max_length(meta) < 256 else 2
    if code in (T.BLOB, T.GEOMETRY, T.JSON):
        return meta
    raise ValueError(f"expected a variable-width column type, got {code}")


def _string_max_length(meta: int) -> int:
    byte0, byte1 = meta >> 8, meta & 0xFF
    return (((byte0 & 0x30) ^ 0x30) << 4) | byte1


def string_max_length(col: ColumnLayout) -> int:
    return _string_max_length(col.meta)


def native_name(col: ColumnLayout) -> str:
    """A canonical native type name (also derived from information_schema, so both agree)."""
    code, meta = col.type_code, col.meta
    if code in _INT_NAMES:
        return _INT_NAMES[code] + (" unsigned" if col.unsigned else "")
    if code == T.NEWDECIMAL:
        return f"decimal({meta >> 8},{meta & 0xFF})"
    named = {
        T.FLOAT: "float",
        T.DOUBLE: "double",
        T.YEAR: "year",
        T.DATE: "date",
        T.ENUM: "enum",
        T.SET: "set",
        T.GEOMETRY: "geometry",
        T.JSON: "json",
    }
    if code in named:
        return named[code]
    if code == T.BIT:
        return f"bit({(meta >> 8) * 8 + (meta & 0xFF)})"
    if code in (T.DATETIME2, T.TIMESTAMP2, T.TIME2):
        base = {T.DATETIME2: "datetime", T.TIMESTAMP2: "timestamp", T.TIME2: "time"}[code]
        return f"{base}({meta})"
    if code in (T.VARCHAR, T.VAR_STRING):
        return "varbinary" if col.is_binary else "varchar"
    if code == T.STRING:
        return "binary" if col.is_binary else "char"
    if code == T.BLOB:
        if col.is_json:
            return "json"
        return _BLOB_NAMES.get(meta, "") + ("blob" if col.is_binary else "text")
    return f"type#{code}"


_ENUM_VALUES = re.compile(r"'((?:[^']|'')*)'")


def labels_from_column_type(column_type: str) -> tuple[str, ...]:
    """``enum('a','b')`` -> ('a', 'b') (information_schema.COLUMNS.COLUMN_TYPE)."""
    body = column_type[column_type.index("(") + 1 : column_type.rindex(")")]
    return tuple(m.group(1).replace("''", "'").replace("\\\\", "\\") for m in _ENUM_VALUES.finditer(body))


def logical_type(col: ColumnLayout, table: str) -> LogicalType:
    """The logical type of a binlog column; ``UnmappableTypeError`` for types dbmazz cannot carry."""
    code, meta = col.type_code, col.meta
    if code in _INT_WIDTH:
        return LogicalType.of(_INT_LOGICAL[(code, col.unsigned)])
    simple = {
        T.FLOAT: Kind.FLOAT32,
        T.DOUBLE: Kind.FLOAT64,
        T.YEAR: Kind.INT16,
        T.DATE: Kind.DATE,
        T.DATETIME2: Kind.TIMESTAMP,
        T.TIMESTAMP2: Kind.TIMESTAMPTZ,
        T.TIME2: Kind.INTERVAL,
        T.GEOMETRY: Kind.BINARY,
        T.JSON: Kind.JSON,
        T.SET: Kind.STRING,
    }
    if code in simple:
        return LogicalType.of(simple[code])
    if code == T.NEWDECIMAL:
        return LogicalType.decimal(meta >> 8, meta & 0xFF)
    if code == T.BIT:
        return LogicalType.of(Kind.BOOL if native_name(col) == "bit(1)" else Kind.UINT64)
    if code == T.ENUM:
        return LogicalType.enum(col.labels)
    if code in (T.VARCHAR, T.VAR_STRING, T.STRING, T.BLOB):
        if col.is_json:
            return LogicalType.of(Kind.JSON)
        return LogicalType.of(Kind.BINARY if col.is_binary else Kind.STRING)
    raise UnmappableTypeError(table, col.name or "?", native_name(col), "mysql")


def column_from_layout(col: ColumnLayout, table: str) -> Column:
    return Column(col.name or "?", logical_type(col, table), col.nullable, native_name(col))
