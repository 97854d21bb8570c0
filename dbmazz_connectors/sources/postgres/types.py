"""PostgreSQL type -> logical type: one table by type name, plus typmods, domains, enums and arrays.

=====================================  ===============================================================
PostgreSQL                             logical type
=====================================  ===============================================================
smallint, integer, bigint              int16, int32, int64
oid                                    int64
real, double precision                 float32, float64 (NaN, +-Infinity kept)
numeric(p,s), p <= 76                  decimal(p,s); NaN/+-Infinity become null (documented)
numeric, numeric(p>76)                 decimal (unbounded: the exact text, 'NaN' and 'Infinity' kept)
boolean                                bool
text, varchar, char(n), "char", name   string (char(n) keeps PostgreSQL's blank padding)
bytea                                  binary
json, jsonb                            json (the text PostgreSQL prints)
uuid                                   uuid
date                                   date (+-infinity as the extremes of core/types.py)
time                                   time
time with time zone                    string ('13:45:00+02', the offset kept)
timestamp                              timestamp (+-infinity as the extremes)
timestamp with time zone               timestamptz (UTC; +-infinity as the extremes)
interval                               interval (months, days, microseconds)
enum types                             enum (labels from pg_enum, in sort order)
arrays of the above (one dimension)    array<T>
money, inet, cidr, macaddr(8), xml,    string (PostgreSQL's text form)
bit, varbit, tsvector, tsquery,
pg_lsn, citext
domains                                their base type
anything else                          UnmappableTypeError
=====================================  ===============================================================
"""

from __future__ import annotations

from dataclasses import dataclass

from ...core.types import Kind, LogicalType

__all__ = ["PgType", "NATIVE_TYPES", "STRING_LIKE", "logical_type", "numeric_precision_scale", "UnmappedType"]

_S = LogicalType.of

NATIVE_TYPES: dict[str, LogicalType] = {
    "int2": _S(Kind.INT16),
    "int4": _S(Kind.INT32),
    "int8": _S(Kind.INT64),
    "oid": _S(Kind.INT64),
    "float4": _S(Kind.FLOAT32),
    "float8": _S(Kind.FLOAT64),
    "bool": _S(Kind.BOOL),
    "text": _S(Kind.STRING),
    "varchar": _S(Kind.STRING),
    "bpchar": _S(Kind.STRING),
    "char": _S(Kind.STRING),
    "name": _S(Kind.STRING),
    "bytea": _S(Kind.BINARY),
    "json": _S(Kind.JSON),
    "jsonb": _S(Kind.JSON),
    "uuid": _S(Kind.UUID),
    "date": _S(Kind.DATE),
    "time": _S(Kind.TIME),
    "timetz": _S(Kind.STRING),
    "timestamp": _S(Kind.TIMESTAMP),
    "timestamptz": _S(Kind.TIMESTAMPTZ),
    "interval": _S(Kind.INTERVAL),
}

# Carried as PostgreSQL's text form.
STRING_LIKE = frozenset(
    {
        "money",
        "inet",
        "cidr",
        "macaddr",
        "macaddr8",
        "xml",
        "bit",
        "varbit",
        "tsvector",
        "tsquery",
        "pg_lsn",
        "citext",
    }
)

_MAX_DECIMAL_PRECISION = 76


@dataclass(frozen=True)
class PgType:
    """What the catalog says about one type (``pg_type``), enough to map it."""

    oid: int
    name: str
    typtype: str  # b base, d domain, e enum, c composite, r range, p pseudo, m multirange
    category: str  # A for arrays
    element_oid: int  # typelem of arrays, else 0
    base_oid: int  # typbasetype of domains, else 0
    base_typmod: int  # typtypmod of domains (the base type's typmod), else -1
    labels: tuple[str, ...] = ()  # enum labels in sort order


class UnmappedType(Exception):  # noqa: N818 - internal signal, turned into UnmappableTypeError by callers
    """Raised by ``logical_type`` with the name of the type that has no logical type."""

    def __init__(self, type_name: str) -> None:
        super().__init__(type_name)
        self.type_name = type_name


def numeric_precision_scale(typmod: int) -> tuple[int, int] | None:
    """(precision, scale) from a numeric typmod, or None for an unbounded numeric."""
    if typmod < 4:
        return None
    value = typmod - 4
    precision = (value >> 16) & 0xFFFF
    scale = value & 0xFFFF
    if scale >= 0x400:  # PostgreSQL 15+: a negative scale is stored as 11-bit two's complement
        scale -= 0x800
    return precision, scale


def _numeric(typmod: int) -> LogicalType:
    bounds = numeric_precision_scale(typmod)
    if bounds is None:
        return LogicalType.decimal()
    precision, scale = bounds
    if scale < 0:  # numeric(5,-2) holds up to 5+2 integer digits
        precision, scale = precision - scale, 0
    if scale > precision or precision > _MAX_DECIMAL_PRECISION:
        return LogicalType.decimal()
    return LogicalType.decimal(precision, scale)


def logical_type(oid: int, typmod: int, lookup) -> LogicalType:
    """The logical type of a column of type ``oid`` with ``typmod``.

    Args:
        oid: the column's type oid (``atttypid``, or the oid in a pgoutput Relation message).
        typmod: the column's ``atttypmod`` (-1 when none).
        lookup: ``oid -> PgType`` (the catalog, cached by the caller).

    Raises:
        UnmappedType: the type (or an array's element type) has no logical type.
    """
    pg = lookup(oid)
    if pg.typtype == "d":
        return logical_type(pg.base_oid, pg.base_typmod if pg.base_typmod >= 0 else typmod, lookup)
    if pg.typtype == "e":
        return LogicalType.enum(pg.labels)
    if pg.category == "A" and pg.element_oid:
        element = logical_type(pg.element_oid, typmod, lookup)
        if element.kind is Kind.ARRAY:
            raise UnmappedType(pg.name)
        return LogicalType.array(element)
    if pg.typtype != "b":
        raise UnmappedType(pg.name)
    if pg.name == "numeric":
        return _numeric(typmod)
    if pg.name in NATIVE_TYPES:
        return NATIVE_TYPES[pg.name]
    if pg.name in STRING_LIKE:
        return LogicalType.of(Kind.STRING)
    raise UnmappedType(pg.name)
