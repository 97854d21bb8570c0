"""Sinks for the edge-value matrix: DuckDB, PostgreSQL and ClickHouse, each with an ``out_of_range`` policy."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Iterator

import pytest

from dbmazz_connectors.core import create_sink


@pytest.fixture
def make_sink(tmp_path, ch_db, pg_sink_db) -> Iterator[Callable[..., object]]:
    """``make_sink(kind, out_of_range, pipeline)``: a connected sink of its own (file, schema or database)."""
    made, databases = [], []
    admin = ch_db.server.client()

    def make(kind: str, out_of_range: str = "refuse", pipeline: str = "p1"):
        name = f"{kind}_{out_of_range}"
        if kind == "duckdb":
            config = {"url": f"duckdb:///{tmp_path}/{name}.duckdb"}
        elif kind == "postgres":
            config = {"url": pg_sink_db.sink_url, "schema": name}
        else:
            database = f"{ch_db.name}_{out_of_range}_{uuid.uuid4().hex[:4]}"
            admin.command(f"CREATE DATABASE `{database}`")
            databases.append(database)
            config = {"url": dataclasses.replace(ch_db, name=database).url}
        sink = create_sink({**config, "type": kind, "pipeline": pipeline, "out_of_range": out_of_range})
        sink.connect()
        made.append(sink)
        return sink

    yield make
    for sink in made:
        sink.disconnect()
    for database in databases:
        admin.command(f"DROP DATABASE IF EXISTS `{database}` SYNC")
    admin.close()


from tests.connectors.sources.mysql.conftest import full_row_metadata, make_source  # noqa: E402,F401 - fixtures
from tests.connectors.sources.postgres.conftest import capture_role  # noqa: E402,F401 - the least-privilege role
