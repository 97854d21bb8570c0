"""The three real sinks, each reading back its live rows of a source table (``read(sink, table, columns)``)."""

from __future__ import annotations

import psycopg
import pytest

from dbmazz_connectors.core import create_sink
from tests.connectors.sources.mysql.conftest import full_row_metadata, make_source  # noqa: F401 - fixtures
from tests.connectors.sources.postgres.conftest import capture_role  # noqa: F401 - the least-privilege role

from ._scenario import POSTGRES, Dialect, seed_tables


def _duckdb_rows(sink, table, columns):
    target = sink.table_state(table)
    cols = ", ".join(sink.q(c) for c in columns)
    return [tuple(r) for r in sink.con.execute(f"SELECT {cols} FROM {sink.target(target)}").fetchall()]


def _postgres_rows(sink, table, columns):
    target = sink.table_state(table)
    cols = ", ".join(sink.q(c) for c in columns)
    return [tuple(r) for r in sink.fetchall(f"SELECT {cols} FROM {sink.target(target)}")]


def _clickhouse_rows(sink, table, columns):
    cols = ", ".join(sink.q(c) for c in columns)
    data = sink.client.query_arrow(f"SELECT {cols} FROM {sink.q(sink.target_name(table) + '_current')}")
    return [tuple(row.values()) for row in data.to_pylist()]


@pytest.fixture
def sinks(tmp_path, ch_db, pg_db):
    """DuckDB, ClickHouse and PostgreSQL sinks (the last in schema ``replica`` of the test's database)."""
    made = {
        "duckdb": (create_sink({"url": f"duckdb:///{tmp_path}/sink.duckdb", "pipeline": "p"}), _duckdb_rows),
        "clickhouse": (create_sink({"url": ch_db.url, "pipeline": "p"}), _clickhouse_rows),
        "postgres": (
            create_sink({"url": pg_db.sink_url, "pipeline": "p", "schema": "replica"}),
            _postgres_rows,
        ),
    }
    for sink, _ in made.values():
        sink.connect()
    yield made
    for sink, _ in made.values():
        sink.disconnect()


@pytest.fixture
def pg_scenario(pg_db, capture_role):  # noqa: F811 - the fixture imported above
    """The scenario's tables seeded in PostgreSQL and a set-up source (slot ``dbmazz_p``) as the capture role."""
    dialect = Dialect(connect=lambda: psycopg.connect(pg_db.url), schema="public", **POSTGRES)
    seed_tables(dialect)
    capture_role.grant(dialect.tables, publication="dbmazz_p")
    source = capture_role.source(
        dialect.tables, pipeline="p", read_block_rows=1000, read_block_bytes=1024 * 1024
    )
    source.setup()
    yield dialect, source
    source.disconnect()
