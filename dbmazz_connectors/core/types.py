"""The closed set of logical types, their text form and their Arrow representation.

Every source maps its native types onto these; every sink maps these onto its own.
The Arrow representation is what travels in ChangeBatches and in the change log:

==================  =====================================================================
logical type        Arrow type
==================  =====================================================================
bool                bool
int8..int64         int8..int64
uint64              uint64
float32, float64    float32, float64 (NaN and +-inf kept)
decimal(p,s)        decimal128(p,s) for p <= 38, decimal256(p,s) for p <= 76
decimal             string: exact text of an unbounded numeric, including 'NaN', 'Infinity'
string, json, uuid  string (json as its text, uuid in canonical lowercase form)
enum                string (the label); the type keeps the labels where the source knows them
binary              binary
date                date32 (+-infinity as int32 max / -max, as DuckDB reads them)
time                time64[us]
timestamp           timestamp[us] (+-infinity as int64 max / -max, as DuckDB reads them)
timestamptz         timestamp[us, UTC]
interval            struct<months: int32, days: int32, micros: int64>
array<T>            list<T>
==================  =====================================================================
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
import pyarrow as pa

__all__ = [
    "Kind",
    "LogicalType",
    "INTERVAL_ARROW",
    "TIMESTAMP_POS_INFINITY",
    "TIMESTAMP_NEG_INFINITY",
    "DATE_POS_INFINITY",
    "DATE_NEG_INFINITY",
    "civil_from_days",
    "format_date",
    "format_timestamp",
]

# +-infinity timestamps/dates are stored as these extremes (DuckDB's own encoding of infinity).
TIMESTAMP_POS_INFINITY = 2**63 - 1
TIMESTAMP_NEG_INFINITY = -(2**63 - 1)
DATE_POS_INFINITY = 2**31 - 1
DATE_NEG_INFINITY = -(2**31 - 1)

INTERVAL_ARROW = pa.struct([("months", pa.int32()), ("days", pa.int32()), ("micros", pa.int64())])


_US_PER_DAY = 86_400_000_000


def civil_from_days(days: Any) -> tuple[Any, Any, Any]:
    """(year, month, day) of ``days`` since 1970-01-01, proleptic Gregorian, astronomical years (1 BC = 0).

    ``days`` is an int (the result: ints) or a numpy array of days (the result: arrays, element-wise).

    Plain integer arithmetic: defined for every int, unlike ``datetime.date`` (years 1..9999 only).
    """
    z = days + 719_468
    era = z // 146_097
    doe = z - era * 146_097
    yoe = (doe - doe // 1460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = np.where(mp < 10, mp + 3, mp - 9)  # works on an int and, element-wise, on a numpy array of days
    if np.ndim(month) == 0:
        month = int(month)
    return yoe + era * 400 + (month <= 2), month, day


def format_date(days: int) -> str:
    """``days`` since 1970-01-01 as text for messages (``2024-02-29``, ``0044-03-15 BC``, ``infinity``); never raises."""
    days = int(days)
    if days == DATE_POS_INFINITY:
        return "infinity"
    if days == DATE_NEG_INFINITY:
        return "-infinity"
    year, month, day = civil_from_days(days)
    era = "" if year > 0 else " BC"
    return f"{year if year > 0 else 1 - year:04d}-{month:02d}-{day:02d}{era}"


def format_timestamp(micros: int) -> str:
    """Microseconds since 1970-01-01 00:00 as text for messages (``0044-03-15 12:00:00.000000 BC``); never raises."""
    micros = int(micros)
    if micros == TIMESTAMP_POS_INFINITY:
        return "infinity"
    if micros == TIMESTAMP_NEG_INFINITY:
        return "-infinity"
    days, rest = divmod(micros, _US_PER_DAY)
    seconds, fraction = divmod(rest, 1_000_000)
    date = format_date(days)
    clock = f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}.{fraction:06d}"
    return date.replace(" BC", f" {clock} BC") if date.endswith(" BC") else f"{date} {clock}"


class Kind(StrEnum):
    BOOL = "bool"
    INT8 = "int8"
    INT16 = "int16"
    INT32 = "int32"
    INT64 = "int64"
    UINT64 = "uint64"
    FLOAT32 = "float32"
    FLOAT64 = "float64"
    DECIMAL = "decimal"
    STRING = "string"
    BINARY = "binary"
    JSON = "json"
    UUID = "uuid"
    DATE = "date"
    TIME = "time"
    TIMESTAMP = "timestamp"
    TIMESTAMPTZ = "timestamptz"
    INTERVAL = "interval"
    ENUM = "enum"
    ARRAY = "array"


_SIMPLE_ARROW: dict[Kind, pa.DataType] = {
    Kind.BOOL: pa.bool_(),
    Kind.INT8: pa.int8(),
    Kind.INT16: pa.int16(),
    Kind.INT32: pa.int32(),
    Kind.INT64: pa.int64(),
    Kind.UINT64: pa.uint64(),
    Kind.FLOAT32: pa.float32(),
    Kind.FLOAT64: pa.float64(),
    Kind.STRING: pa.string(),
    Kind.BINARY: pa.binary(),
    Kind.JSON: pa.string(),
    Kind.UUID: pa.string(),
    Kind.ENUM: pa.string(),
    Kind.DATE: pa.date32(),
    Kind.TIME: pa.time64("us"),
    Kind.TIMESTAMP: pa.timestamp("us"),
    Kind.TIMESTAMPTZ: pa.timestamp("us", tz="UTC"),
    Kind.INTERVAL: INTERVAL_ARROW,
}

_DECIMAL_RE = re.compile(r"^decimal\((\d+),(\d+)\)$")
_ENUM_RE = re.compile(r"^enum\((.*)\)$")


@dataclass(frozen=True)
class LogicalType:
    """One logical type. Build them with the class methods (``LogicalType.decimal(12, 2)``).

    ``precision``/``scale`` are set for bounded decimals only; ``element`` for arrays;
    ``labels`` for enums whose labels the source reports (may be empty).
    """

    kind: Kind
    precision: int | None = None
    scale: int | None = None
    element: LogicalType | None = None
    labels: tuple[str, ...] = ()

    @classmethod
    def of(cls, kind: Kind | str) -> LogicalType:
        kind = Kind(kind)
        if kind in (Kind.ARRAY,):
            raise ValueError("expected LogicalType.array(element) for arrays")
        return cls(kind)

    @classmethod
    def decimal(cls, precision: int | None = None, scale: int | None = None) -> LogicalType:
        """``decimal(p,s)``; without precision, the unbounded decimal (carried as exact text)."""
        if precision is None:
            return cls(Kind.DECIMAL)
        scale = scale or 0
        if not 1 <= precision <= 76 or not 0 <= scale <= precision:
            raise ValueError(
                f"expected 1 <= precision <= 76 and 0 <= scale <= precision, got ({precision},{scale})"
            )
        return cls(Kind.DECIMAL, precision, scale)

    @classmethod
    def array(cls, element: LogicalType) -> LogicalType:
        return cls(Kind.ARRAY, element=element)

    @classmethod
    def enum(cls, labels: tuple[str, ...] | list[str] = ()) -> LogicalType:
        return cls(Kind.ENUM, labels=tuple(labels))

    @property
    def is_unbounded_decimal(self) -> bool:
        return self.kind is Kind.DECIMAL and self.precision is None

    def to_arrow(self) -> pa.DataType:
        if self.kind is Kind.DECIMAL:
            if self.precision is None:
                return pa.string()
            if self.precision <= 38:
                return pa.decimal128(self.precision, self.scale or 0)
            return pa.decimal256(self.precision, self.scale or 0)
        if self.kind is Kind.ARRAY:
            assert self.element is not None
            return pa.list_(self.element.to_arrow())
        return _SIMPLE_ARROW[self.kind]

    def __str__(self) -> str:
        if self.kind is Kind.DECIMAL and self.precision is not None:
            return f"decimal({self.precision},{self.scale})"
        if self.kind is Kind.ARRAY:
            return f"array<{self.element}>"
        if self.kind is Kind.ENUM and self.labels:
            return "enum(" + ",".join(_quote_label(label) for label in self.labels) + ")"
        return self.kind.value

    @classmethod
    def parse(cls, text: str) -> LogicalType:
        """Inverse of ``str()``."""
        text = text.strip()
        if text.startswith("array<") and text.endswith(">"):
            return cls.array(cls.parse(text[6:-1]))
        if match := _DECIMAL_RE.match(text):
            return cls.decimal(int(match.group(1)), int(match.group(2)))
        if match := _ENUM_RE.match(text):
            return cls.enum(_split_labels(match.group(1)))
        return cls.of(text)


def _quote_label(label: str) -> str:
    return "'" + label.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _split_labels(body: str) -> list[str]:
    labels: list[str] = []
    i = 0
    while i < len(body):
        if body[i] != "'":
            i += 1
            continue
        i += 1
        buf = []
        while body[i] != "'":
            if body[i] == "\\":
                i += 1
            buf.append(body[i])
            i += 1
        labels.append("".join(buf))
        i += 1
    return labels
