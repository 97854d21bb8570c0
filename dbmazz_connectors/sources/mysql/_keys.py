"""Primary-key ranges of a MySQL table: exact JSON bounds, typed predicates, and the keyset walk that plans chunks.

A bound is a tuple of JSON values, one per key column, that compares exactly in MySQL:

=====================================  ==============  ==========================================
key column                             JSON value      passed back as
=====================================  ==============  ==========================================
tinyint .. bigint (unsigned), year     int             an integer literal (never a string: a
                                                       BIGINT compared with a string is a double)
decimal                                str (its text)  a Decimal literal (exact, unquoted)
char / varchar / text                  str             a string literal, compared in the
                                                       column's collation, as ORDER BY sorts
binary / varbinary / blob              str (hex)       a binary literal
date / datetime / timestamp / time     str (its text)  a string literal, converted to the
                                                       column's type (TIMESTAMP text in UTC)
=====================================  ==============  ==========================================

Other key types (float, double, bit, enum, set, json, geometry) have no exact round trip; such a
table is read as one chunk (and a key-range snapshot of it is refused).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

import pymysql

from ...core.errors import ConfigError, SourceError
from ...core.schema import TableSchema
from ...core.snapshot import FULL_RANGE, KeyRange

__all__ = ["quote", "qualified", "key_codecs", "key_predicate", "plan_key_ranges", "to_json", "to_param"]

_INTEGER = ("tinyint", "smallint", "mediumint", "int", "bigint", "year")
_STRING = ("char", "varchar", "tinytext", "text", "mediumtext", "longtext")
_BINARY = ("binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob")
_TEMPORAL = ("date", "datetime", "timestamp", "time")


def quote(identifier: str) -> str:
    """A MySQL identifier in backticks (a backtick inside doubled)."""
    return "`" + identifier.replace("`", "``") + "`"


def qualified(schema: TableSchema) -> str:
    return f"{quote(schema.schema)}.{quote(schema.name)}"


def _codec(source_type: str | None) -> str | None:
    """How a key column's bound round-trips (see the module table), or None when it cannot."""
    base = (source_type or "").split("(")[0].split(" ")[0].lower()
    for name, group in (
        ("int", _INTEGER),
        ("decimal", ("decimal",)),
        ("string", _STRING),
        ("binary", _BINARY),
        ("temporal", _TEMPORAL),
    ):
        if base in group:
            return name
    return None


def key_codecs(schema: TableSchema) -> tuple[str, ...] | None:
    """One codec per primary-key column, or None when a key column's type has no exact bound."""
    codecs = tuple(_codec(schema.column(k).source_type) for k in schema.primary_key)
    return None if None in codecs else codecs  # type: ignore[return-value]


def key_columns(schema: TableSchema) -> str:
    return ", ".join(quote(k) for k in schema.primary_key)


def to_json(codec: str, raw: Any) -> Any:
    """A key value as the text protocol returns it (str, or bytes for binary) -> its JSON bound."""
    if codec == "int":
        return int(raw)
    if codec == "binary":
        return bytes(raw).hex()
    return raw.decode() if isinstance(raw, bytes | bytearray) else str(raw)


def to_param(codec: str, value: Any) -> Any:
    """A JSON bound -> the parameter pymysql quotes into an exact literal."""
    if codec == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"expected an integer key bound, got {value!r}")
        return value
    if codec == "decimal":
        return Decimal(str(value))
    if codec == "binary":
        return bytes.fromhex(str(value))
    return str(value)


Literal = Callable[[Any], str]  # the connection's escaping (``conn.escape``): a value as an SQL literal


def _compare(keys: Sequence[str], values: Sequence[str], last_op: str, op: str) -> str:
    """Lexicographic ``keys <op> values`` as ORs of ANDs (index ranges in MySQL and MariaDB alike)."""
    terms = []
    for i, key in enumerate(keys):
        equal = [f"{quote(k)} = {v}" for k, v in zip(keys[:i], values[:i], strict=True)]
        compare = f"{quote(key)} {last_op if i == len(keys) - 1 else op} {values[i]}"
        terms.append("(" + " AND ".join([*equal, compare]) + ")")
    return "(" + " OR ".join(terms) + ")"


def key_predicate(schema: TableSchema, key_range: KeyRange, literal: Literal) -> str:
    """SQL selecting ``lower <= key < upper`` (``TRUE`` when unbounded), bounds as typed literals."""
    if key_range.is_full:
        return "TRUE"
    keys = schema.primary_key
    codecs = key_codecs(schema)
    if codecs is None:
        raise ConfigError(
            f"a key range of {schema.qualified_name} cannot be read: its key type has no exact bound",
            hint="snapshot the whole table (key ranges need integer, decimal, string, binary or "
            "temporal key columns)",
        )
    parts = []
    for bound, last_op, op in ((key_range.lower, ">=", ">"), (key_range.upper, "<", "<")):
        if bound is not None:
            if len(bound) != len(keys):
                raise SourceError(
                    f"expected a key bound of {len(keys)} values for key {list(keys)}, got {list(bound)}"
                )
            values = [literal(to_param(c, v)) for c, v in zip(codecs, bound, strict=True)]
            parts.append(_compare(keys, values, last_op, op))
    return " AND ".join(parts)


def plan_key_ranges(
    conn: pymysql.Connection, schema: TableSchema, chunk_rows: int, key_range: KeyRange = FULL_RANGE
) -> list[KeyRange]:
    """Walk the primary key in steps of ``chunk_rows`` keys (keyset: ``... LIMIT 1 OFFSET chunk_rows``).

    ``conn`` must decode nothing (``conv={}``: values as text, binary as bytes) and use the
    snapshot sessions' time zone, so a TIMESTAMP bound means the same instant when read back.
    """
    codecs = key_codecs(schema)
    if codecs is None:
        key_predicate(schema, key_range, conn.escape)  # refuses a bounded range of such a key
        return [key_range]
    order = key_columns(schema)
    bounds: list[tuple[Any, ...]] = []
    lower = key_range.lower
    with conn.cursor() as cur:
        while True:
            where = key_predicate(schema, KeyRange(lower, key_range.upper), conn.escape)
            cur.execute(
                f"SELECT {order} FROM {qualified(schema)} WHERE {where} ORDER BY {order} "
                f"LIMIT 1 OFFSET {int(chunk_rows)}"
            )
            row = cur.fetchone()
            if row is None:
                break
            lower = tuple(to_json(c, v) for c, v in zip(codecs, row, strict=True))
            bounds.append(lower)
    edges = [key_range.lower, *bounds, key_range.upper]
    return [KeyRange(edges[i], edges[i + 1]) for i in range(len(edges) - 1)]
