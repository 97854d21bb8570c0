"""Bench target for the DuckDB sink: a fresh file; raw load = INSERT of the Arrow table."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import pyarrow as pa

from bench._sink_bench import BenchTarget
from dbmazz_connectors.core import TableSchema
from dbmazz_connectors.sinks.duckdb import DuckDbSink


def _raw_load_in_batches(workdir: str, name: str = "raw_batches"):
    def load(final: pa.Table, schema: TableSchema, batch_rows: int) -> float:
        raw = DuckDbSink.from_config({"path": f"{workdir}/{name}.duckdb", "schema": "bench_raw"})
        raw.connect()
        raw.create_table(schema)  # the same table DDL as the sink's
        con = raw.con
        began = time.perf_counter()
        for start in range(0, final.num_rows, batch_rows):
            con.begin()  # one durable commit per slice, as the sink commits each applied batch
            con.register("final_rows", final.slice(start, batch_rows))
            con.execute('INSERT INTO "bench_raw"."orders" SELECT * FROM final_rows')
            con.unregister("final_rows")
            con.commit()
        raw.disconnect()  # the checkpoint, as for the apply
        return time.perf_counter() - began

    return load


def _raw_load(workdir: str):
    load_in_batches = _raw_load_in_batches(
        workdir, "raw"
    )  # a file of its own: both loads may run in one target

    def load(final: pa.Table, schema: TableSchema) -> float:
        return load_in_batches(final, schema, max(final.num_rows, 1))

    return load


def _check(sink: DuckDbSink, schema: TableSchema) -> dict:
    rows, customers = sink.fetchall('SELECT count(*), sum(customer_id) FROM "public"."orders"')[0]
    return {"rows": int(rows), "sum_customer_id": int(customers)}


@contextmanager
def target(workdir: str) -> Iterator[BenchTarget]:
    yield BenchTarget(
        {"url": f"duckdb:///{workdir}/sink.duckdb"},
        _raw_load(workdir),
        _check,
        raw_load_in_batches=_raw_load_in_batches(workdir),
    )
