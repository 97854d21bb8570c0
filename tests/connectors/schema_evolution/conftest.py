"""Sinks for the schema-evolution tests: DuckDB, ClickHouse and PostgreSQL, one at a time, by name."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from dbmazz_connectors.core import create_sink
from tests.connectors.sources.mysql.conftest import full_row_metadata, make_source  # noqa: F401 - fixtures
from tests.connectors.sources.postgres.conftest import capture_role  # noqa: F401 - the least-privilege role


@pytest.fixture
def make_sink(tmp_path, request) -> Iterator[Callable[[str], object]]:
    """``make_sink(kind)``: a connected sink of pipeline ``p1`` (the PostgreSQL sink in schema ``replica``).

    The ClickHouse and PostgreSQL servers are only started for the test that asks for them.
    """
    made = []

    def make(kind: str):
        if kind == "duckdb":
            config = {"url": f"duckdb:///{tmp_path}/sink.duckdb"}
        elif kind == "clickhouse":
            config = {"url": request.getfixturevalue("ch_db").url}
        else:
            config = {"url": request.getfixturevalue("pg_sink_db").sink_url, "schema": "replica"}
        sink = create_sink({**config, "pipeline": "p1"})
        sink.connect()
        made.append(sink)
        return sink

    yield make
    for sink in made:
        sink.disconnect()
