"""Bench target for the ClickHouse sink: a throw-away server; raw load = insert_arrow of the Arrow table."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pyarrow as pa

from bench._sink_bench import BenchTarget
from dbmazz_connectors.core import TableSchema
from dbmazz_connectors.sinks.clickhouse import ClickHouseSink
from infra.clickhouse import ClickHouseServer

# The sink's user: the README's grants on its two databases, plus DROP TABLE (a rebuild exchanges tables) and the
# ReplacingMergeTree engine (ClickHouse >= 24 asks for TABLE ENGINE); the raw load uses it too.
SINK_USER = "bench_sink"
_GRANTS = [
    f"GRANT CREATE TABLE, CREATE VIEW, DROP VIEW, ALTER, INSERT, SELECT, ALTER DELETE, DROP TABLE ON {db}.*"
    for db in ("bench", "bench_raw")
] + ["GRANT TABLE ENGINE ON ReplacingMergeTree"]


def _raw_load(server: ClickHouseServer, password: str):
    def load(final: pa.Table, schema: TableSchema) -> float:
        raw = ClickHouseSink.from_config({"url": server.url("bench_raw", user=SINK_USER, password=password)})
        raw.connect()
        raw.create_table(schema)  # the same table DDL as the sink's
        began = time.perf_counter()
        raw.client.insert_arrow("orders", final)
        seconds = time.perf_counter() - began
        raw.disconnect()
        return seconds

    return load


def _check(sink: ClickHouseSink, schema: TableSchema) -> dict:
    rows, customers = sink.query_rows("SELECT count(), sum(customer_id) FROM orders_current")[0]
    return {"rows": int(rows), "sum_customer_id": int(customers)}


@contextmanager
def target(workdir: str) -> Iterator[BenchTarget]:
    password = secrets.token_hex(12)
    with ClickHouseServer(users={SINK_USER: (password, _GRANTS)}) as server:
        admin = server.client()
        for database in ("bench", "bench_raw"):
            admin.command(f"CREATE DATABASE {database}")
        admin.close()
        url = server.url("bench", user=SINK_USER, password=password)
        yield BenchTarget(
            {"url": url},
            _raw_load(server, password),
            _check,
            {"server_startup_seconds": server.startup_seconds},
        )
