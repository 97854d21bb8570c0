"""Edge values read back from the sources and the three sinks as comparable Python values.

No reader turns a date or timestamp into a Python ``datetime`` (which stops at years 1..9999):
dates are compared as days since 1970-01-01, timestamps as microseconds (+-infinity as the
encodings of ``core/types.py``), times as microseconds, intervals as (months, days, micros).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from decimal import Decimal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dbmazz_connectors.core.types import (
    DATE_NEG_INFINITY,
    DATE_POS_INFINITY,
    TIMESTAMP_NEG_INFINITY,
    TIMESTAMP_POS_INFINITY,
    Kind,
    LogicalType,
)

__all__ = ["canon", "pg_rows", "duckdb_rows", "clickhouse_rows", "postgres_sink_rows", "mariadb_rows"]

Columns = Mapping[str, LogicalType]  # the compared columns and their logical types (the key first)


def canon(value, logical: LogicalType):
    """One spelling per value, whatever the reader returned."""
    if value is None:
        return None
    kind = logical.kind
    if kind is Kind.ARRAY:
        assert logical.element is not None
        return [canon(v, logical.element) for v in value]
    if isinstance(value, bytes | bytearray | memoryview) and kind is not Kind.BINARY:
        value = bytes(value).decode()
    if kind in (Kind.FLOAT32, Kind.FLOAT64):
        value = float(np.float32(value)) if kind is Kind.FLOAT32 else float(value)
        return "nan" if math.isnan(value) else value
    if kind is Kind.DECIMAL:
        return _decimal_text(value)
    if kind is Kind.JSON:
        return json.dumps(json.loads(value) if isinstance(value, str) else value, sort_keys=True)
    if kind is Kind.BINARY:
        return bytes(value)
    if kind is Kind.INTERVAL:
        if isinstance(value, dict):
            return value["months"], value["days"], value["micros"]
        if hasattr(value, "nanoseconds"):
            return value.months, value.days, value.nanoseconds // 1000
        return tuple(int(v) for v in value)
    if kind in (Kind.DATE, Kind.TIMESTAMP, Kind.TIMESTAMPTZ, Kind.TIME, Kind.INT64, Kind.UINT64):
        return int(value)
    if kind is Kind.UUID:
        return str(value).lower()
    return value


def _decimal_text(value) -> str:
    """Exact plain digits without trailing zeros ('NaN', 'Infinity' as they are), any size."""
    number = Decimal(str(value))
    if not number.is_finite():
        return str(number)
    text = format(number, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _arrow_rows(data: pa.Table, columns: Columns) -> dict:
    """Rows by key (the first column) from an Arrow result; temporal columns read as integers."""
    out: dict = {}
    values = {name: _ints(data.column(name), logical).to_pylist() for name, logical in columns.items()}
    key = next(iter(columns))
    for i in range(data.num_rows):
        out[values[key][i]] = {n: canon(values[n][i], lt) for n, lt in columns.items()}
    return out


def _ints(array: pa.ChunkedArray, logical: LogicalType) -> pa.ChunkedArray:
    physical = _physical(logical)
    return array if physical is None else pc.cast(array, physical)


def _physical(logical: LogicalType) -> pa.DataType | None:
    if logical.kind is Kind.ARRAY:
        assert logical.element is not None
        inner = _physical(logical.element)
        return None if inner is None else pa.list_(inner)
    if logical.kind is Kind.DATE:
        return pa.int32()
    if logical.kind in (Kind.TIMESTAMP, Kind.TIMESTAMPTZ, Kind.TIME):
        return pa.int64()
    return None


_DUCKDB_INTERVAL = (
    "CASE WHEN {c} IS NULL THEN NULL ELSE [datepart('year', {c}) * 12 + datepart('month', {c}), "
    "datepart('day', {c}), datepart('hour', {c}) * 3600000000 + datepart('minute', {c}) * 60000000 "
    "+ datepart('microseconds', {c})] END AS {c}"
)  # Arrow's interval (ns) cannot hold every one


def duckdb_rows(sink, table: str, columns: Columns) -> dict:
    target = sink.target(sink.table_state(table))
    cols = ", ".join(
        _DUCKDB_INTERVAL.format(c=sink.q(c)) if lt.kind is Kind.INTERVAL else sink.q(c)
        for c, lt in columns.items()
    )
    return _arrow_rows(sink.con.sql(f"SELECT {cols} FROM {target}").to_arrow_table(), columns)


def clickhouse_rows(sink, table: str, columns: Columns) -> dict:
    exprs = ", ".join(f"{sink.types.read_expr(sink.q(c), lt)} AS {sink.q(c)}" for c, lt in columns.items())
    data = sink.query_arrow(f"SELECT {exprs} FROM {sink.q(sink.target_name(table) + '_current')}")
    return _arrow_rows(data, columns)


# ---- PostgreSQL (source and sink): temporal values turned into integers by the server itself
_DATE = (
    "CASE WHEN {c} = 'infinity' THEN "
    f"{DATE_POS_INFINITY} WHEN {{c}} = '-infinity' THEN {DATE_NEG_INFINITY} "
    "ELSE {c} - date '1970-01-01' END"
)
_TS = (
    "CASE WHEN {c} = 'infinity' THEN "
    f"{TIMESTAMP_POS_INFINITY} WHEN {{c}} = '-infinity' THEN "
    f"{TIMESTAMP_NEG_INFINITY} "
    "ELSE (extract(epoch from {c}) * 1000000)::numeric(40,0) END"
)
_TIME = "(extract(epoch from {c}) * 1000000)::bigint"
_INTERVAL = (
    "ARRAY[(extract(year from {c}) * 12 + extract(month from {c}))::bigint, extract(day from {c})::bigint, "
    "(extract(hour from {c}) * 3600000000 + extract(minute from {c}) * 60000000 "
    "+ extract(microseconds from {c}))::bigint]"
)


def _pg_expr(column: str, logical: LogicalType) -> str:
    kind = logical.kind
    if kind is Kind.ARRAY:
        assert logical.element is not None
        inner = _pg_expr("x", logical.element)
        if inner == "x":
            return column
        return (
            f"CASE WHEN {column} IS NULL THEN NULL ELSE "
            f"ARRAY(SELECT {inner} FROM unnest({column}) WITH ORDINALITY u(x, o) ORDER BY o) END"
        )
    template = {
        Kind.DATE: _DATE,
        Kind.TIMESTAMP: _TS,
        Kind.TIMESTAMPTZ: _TS,
        Kind.TIME: _TIME,
        Kind.INTERVAL: _INTERVAL,
        Kind.JSON: "{c}::text",
        Kind.DECIMAL: "{c}::text",
    }.get(kind)
    return column if template is None else template.format(c=column)


def pg_rows(conn, target: str, columns: Columns, quote=lambda c: f'"{c}"') -> dict:
    """Rows of a PostgreSQL table (a source, or a sink's ``target``) by key."""
    exprs = ", ".join(_pg_expr(quote(c), lt) for c, lt in columns.items())
    out = {}
    for row in conn.execute(f"SELECT {exprs} FROM {target}").fetchall():
        values = {n: canon(v, lt) for (n, lt), v in zip(columns.items(), row, strict=True)}
        out[values[next(iter(columns))]] = values
    return out


def postgres_sink_rows(sink, table: str, columns: Columns) -> dict:
    return pg_rows(sink._require(), sink.target(sink.table_state(table)), columns, sink.q)


# ---- MariaDB (source)
def _my_expr(column: str, logical: LogicalType) -> str:
    kind = logical.kind
    if kind is Kind.DATE:
        return f"DATEDIFF({column}, '1970-01-01')"
    if kind in (Kind.TIMESTAMP, Kind.TIMESTAMPTZ):
        return f"TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', {column})"
    if kind is Kind.INTERVAL:  # TIME: signed microseconds
        return f"ROUND(TIME_TO_SEC({column}) * 1000000)"  # TIME_TO_SEC keeps the fraction of a TIME(6)
    return column


def mariadb_rows(conn, table: str, columns: Columns) -> dict:
    exprs = ", ".join(_my_expr(f"`{c}`", lt) for c, lt in columns.items())
    with conn.cursor() as cur:
        cur.execute("SET time_zone = '+00:00'")
        cur.execute(f"SELECT {exprs} FROM `{table}`")
        rows = cur.fetchall()
    out = {}
    for row in rows:
        values = {}
        for (name, logical), value in zip(columns.items(), row, strict=True):
            if logical.kind is Kind.INTERVAL and value is not None:
                value = (0, 0, int(value))
            values[name] = canon(value, logical)
        out[values[next(iter(columns))]] = values
    return out


def differences(expected: dict, found: dict, what: str) -> list[str]:
    """Human-readable differences, key by key and column by column (empty when equal)."""
    problems = []
    for key in sorted(set(expected) | set(found), key=repr):
        if key not in found or key not in expected:
            problems.append(f"{what}: key {key!r} only in {'the source' if key in expected else 'the sink'}")
            continue
        for column, want in expected[key].items():
            got = found[key].get(column)
            if got != want:
                problems.append(f"{what}: key {key!r} column {column}: expected {want!r}, found {got!r}")
    return problems


def as_map(rows: Sequence[dict], key: str) -> dict:
    return {row[key]: row for row in rows}
