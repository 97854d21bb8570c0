"""Helpers for the PostgreSQL source tests: the least-privilege capture role, capture, row comparison."""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal

import pyarrow as pa

from dbmazz_connectors.changelog import ChangeLog
from dbmazz_connectors.engine import capture_range, fold_table
from dbmazz_connectors.sources.postgres import PostgresSource
from tests.fixtures.servers import PgDatabase


@dataclass
class CaptureRole:
    """A role with LOGIN REPLICATION only; tests grant it SELECT and hand it the publication."""

    db: PgDatabase
    name: str
    password: str
    mode: str = "peek"  # the capture_mode of the sources it makes

    def grant(self, tables: list[str], publication: str | None = "dbmazz_p1") -> None:
        """GRANT SELECT on ``tables``; create ``publication`` as the superuser and give it to the role."""
        with self.db.connect() as conn:
            for table in tables:
                conn.execute(f"GRANT SELECT ON {table} TO {self.name}")
            if publication:
                conn.execute(f"CREATE PUBLICATION {publication} FOR TABLE {', '.join(tables)}")
                conn.execute(f"ALTER PUBLICATION {publication} OWNER TO {self.name}")

    def source(self, tables: list[str], pipeline: str = "p1", **options) -> PostgresSource:
        config = {
            "url": self.db.url_as(self.name, self.password),
            "pipeline": pipeline,
            "tables": tables,
            "capture_mode": self.mode,
            **options,
        }
        source = PostgresSource.from_config(config)
        source.connect()
        return source


def capture(source: PostgresSource, changelog: ChangeLog, pipeline: str = "p1"):
    """Capture everything from the slot's checkpoint to now as one batch."""
    start = source.checkpoint_position()
    end = source.current_position()
    return capture_range(source, changelog, pipeline, start, end)


def _normal(value):
    if isinstance(value, Decimal):
        return value.normalize() if value.is_finite() else str(value)
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    return value


def source_rows(
    db: PgDatabase, table: str, key: str = "id", json_columns: tuple[str, ...] = (), select: str = "*"
) -> list[dict]:
    """The rows of ``table`` (an SQL name, quoted as needed), ``select`` columns, ordered by ``key``."""
    with db.connect() as conn:
        cur = conn.execute(f"SELECT {select} FROM {table} ORDER BY {key}")
        names = [d.name for d in cur.description]
        return [{n: _normal(v) for n, v in zip(names, row, strict=True)} for row in cur.fetchall()]


def folded_rows(
    changelog: ChangeLog,
    table: str,
    key: str = "id",
    json_columns: tuple[str, ...] = (),
    pipeline: str = "p1",
) -> list[dict]:
    schema, state = fold_table(changelog, pipeline, table)
    if state is None:
        return []
    data = state.select(schema.column_names).sort_by([(k.strip(), "ascending") for k in key.split(",")])
    rows = data.to_pylist()
    for row in rows:
        for column in json_columns:
            if row[column] is not None:
                row[column] = json.loads(row[column])
    return [{n: _normal(v) for n, v in row.items()} for row in rows]


def assert_folded_equals_source(
    db: PgDatabase,
    changelog: ChangeLog,
    table: str,
    key: str = "id",
    json_columns: tuple[str, ...] = (),
    pipeline: str = "p1",
    source_table: str | None = None,
    select: str = "*",
) -> int:
    """Folded change log == source, row by row; ``source_table``: the SQL name when ``table`` needs quoting."""
    expected = source_rows(db, source_table or table, key, select=select)
    found = folded_rows(changelog, table, key, json_columns, pipeline)
    assert len(found) == len(expected), f"{table}: folded {len(found)} rows, source has {len(expected)}"
    for want, got in zip(expected, found, strict=True):
        assert got == want, f"{table}: row differs\n source: {want}\n folded: {got}"
    return len(expected)


def table_rows(changelog: ChangeLog, batch_id: str, table: str, pipeline: str = "p1") -> pa.Table:
    batch = changelog.read_batch(pipeline, batch_id, table)
    return pa.concat_tables([r.data for r in batch.rows()]) if batch.row_count else None
