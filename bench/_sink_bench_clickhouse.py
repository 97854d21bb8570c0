"""Bench target for the ClickHouse sink: a throw-away server; raw load = insert_arrow of the Arrow table."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import pyarrow as pa

from bench._sink_bench import BenchTarget
from dbmazz_connectors.core import TableSchema
from dbmazz_connectors.sinks.clickhouse import ClickHouseSink
from infra.clickhouse import ClickHouseServer


def _raw_load(server: ClickHouseServer):
    def load(final: pa.Table, schema: TableSchema) -> float:
        raw = ClickHouseSink.from_config({"url": server.url("bench_raw")})
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
    with ClickHouseServer() as server:
        admin = server.client()
        for database in ("bench", "bench_raw"):
            admin.command(f"CREATE DATABASE {database}")
        admin.close()
        yield BenchTarget({"url": server.url("bench")}, _raw_load(server), _check,
                          {"server_startup_seconds": server.startup_seconds})
