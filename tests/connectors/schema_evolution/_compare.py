"""Source and sink rows compared column by column (through the edge-value readers of tests/connectors/values)."""

from __future__ import annotations

from collections.abc import Mapping

from dbmazz_connectors.core import LogicalType
from dbmazz_connectors.engine import apply_batch
from tests.connectors.values._canon import (
    clickhouse_rows,
    differences,
    duckdb_rows,
    mariadb_rows,
    pg_rows,
    postgres_sink_rows,
)

T = LogicalType.parse
READERS = {"duckdb": duckdb_rows, "clickhouse": clickhouse_rows, "postgres": postgres_sink_rows}
SINKS = ("duckdb", "clickhouse", "postgres")


def apply_all(changelog, sink, pipeline: str = "p1") -> None:
    """Every batch of the change log, in order (a batch the sink applied already is skipped)."""
    for manifest in changelog.batches(pipeline):
        apply_batch(changelog, sink, pipeline, manifest.batch_id)


def sink_rows(kind: str, sink, table: str, columns: Mapping[str, LogicalType]) -> dict:
    return READERS[kind](sink, table, columns)


def assert_pg_sink_equals_source(
    kind: str, sink, pg_conn, table: str, columns: Mapping[str, LogicalType], step: str
) -> dict:
    """The sink's live rows of ``public.<table>`` == the PostgreSQL source's, in ``columns``; the sink rows."""
    expected = pg_rows(pg_conn, f'"public"."{table}"', columns)
    found = sink_rows(kind, sink, f"public.{table}", columns)
    problems = differences(expected, found, f"{kind} after {step}")
    assert not problems, "\n".join(problems[:20])
    return found


def assert_my_sink_equals_source(
    kind: str, sink, my_conn, database: str, table: str, columns: Mapping[str, LogicalType], step: str
) -> dict:
    """The sink's live rows of ``<database>.<table>`` == the MariaDB source's, in ``columns``; the sink rows."""
    my_conn.commit()  # a fresh read view
    expected = mariadb_rows(my_conn, table, columns)
    found = sink_rows(kind, sink, f"{database}.{table}", columns)
    problems = differences(expected, found, f"{kind} after {step}")
    assert not problems, "\n".join(problems[:20])
    return found
