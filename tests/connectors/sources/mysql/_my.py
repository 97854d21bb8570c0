"""Helpers of the MySQL source tests: capture a range, compare the folded change log with the source."""

from __future__ import annotations

import datetime as dt
from decimal import Context, Decimal

from dbmazz_connectors.changelog import ChangeLog
from dbmazz_connectors.engine import capture_range, fold_table
from dbmazz_connectors.sources.mysql import MySqlSource
from dbmazz_connectors.sources.mysql.position import BinlogPosition
from tests.fixtures.servers import MySqlDatabase

_EXACT = Context(prec=100)


def capture(
    source: MySqlSource,
    changelog: ChangeLog,
    start: BinlogPosition,
    end: BinlogPosition | None = None,
    pipeline: str = "p1",
):
    return capture_range(source, changelog, pipeline, start, end or source.current_position())


def normal(value):
    """One spelling per value on both sides (pymysql's and Arrow's)."""
    if isinstance(value, Decimal):
        return value.normalize(_EXACT)
    if isinstance(value, dt.timedelta):
        return round(value.total_seconds() * 1_000_000)
    if isinstance(value, dict) and set(value) == {"months", "days", "micros"}:
        return value["micros"] + value["days"] * 86_400_000_000
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.replace(tzinfo=None)
    if isinstance(value, bytearray):
        return bytes(value)
    return value


def _keys(key: str) -> list[str]:
    """``"a, b"`` -> ["a", "b"]: a composite key in source order."""
    return [k.strip() for k in key.split(",")]


def source_rows(db: MySqlDatabase, table: str, key: str = "id") -> list[dict]:
    conn = db.connect()
    with conn.cursor() as cur:
        cur.execute(f"SELECT * FROM `{table}` ORDER BY " + ", ".join(f"`{k}`" for k in _keys(key)))
        names = [d[0] for d in cur.description]
        rows = [{n: normal(v) for n, v in zip(names, row, strict=True)} for row in cur.fetchall()]
    conn.close()
    return rows


def folded_rows(changelog: ChangeLog, table: str, key: str = "id", pipeline: str = "p1") -> list[dict]:
    schema, state = fold_table(changelog, pipeline, table)
    assert schema is not None and state is not None, f"{table} never appeared in the change log"
    data = state.select(schema.column_names).sort_by([(k, "ascending") for k in _keys(key)])
    return [{n: normal(v) for n, v in row.items()} for row in data.to_pylist()]


def assert_folded_equals_source(
    db: MySqlDatabase, changelog: ChangeLog, table: str, key: str = "id", pipeline: str = "p1"
) -> None:
    expected = source_rows(db, table, key)
    actual = folded_rows(changelog, f"{db.name}.{table}", key, pipeline)
    assert len(actual) == len(expected), f"{table}: {len(actual)} rows folded, {len(expected)} in the source"
    for got, want in zip(actual, expected, strict=True):
        assert got == want, f"{table}: folded row differs from the source: {got} != {want}"
