"""Bench target for the PostgreSQL sink: a throw-away server; raw load = CSV COPY of the Arrow rows."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pyarrow as pa

from bench._sink_bench import BenchTarget
from dbmazz_connectors.core import TableSchema
from dbmazz_connectors.sinks.postgres import PostgresSink
from dbmazz_connectors.sinks.postgres.sink import copy_csv
from infra.postgres import PostgresServer

SINK_ROLE = "bench_sink"


def _raw_load(url: str):
    def load(final: pa.Table, schema: TableSchema) -> float:
        raw = PostgresSink.from_config({"url": url, "schema": "bench_raw"})
        raw.connect()
        raw.create_table(schema)  # the same table DDL as the sink's
        began = time.perf_counter()
        copy_csv(
            raw.conn, 'COPY "bench_raw"."orders" FROM STDIN (FORMAT csv)', final
        )  # the sink's own COPY path
        seconds = time.perf_counter() - began
        raw.disconnect()
        return seconds

    return load


def _check(sink: PostgresSink, schema: TableSchema) -> dict:
    rows, customers = sink.fetchall('SELECT count(*), sum(customer_id) FROM "public"."orders"')[0]
    return {"rows": int(rows), "sum_customer_id": int(customers)}


def _sink_role(server: PostgresServer) -> str:
    """The sink's documented minimum (its README): LOGIN, CREATE on the database, and on schema public (PostgreSQL
    15 gives no one CREATE there); returns its url. The raw load runs as the same role, on the same footing."""
    import psycopg

    password = secrets.token_hex(12)
    with psycopg.connect(server.url(), autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {SINK_ROLE} LOGIN PASSWORD '{password}'")
        conn.execute(f"GRANT CREATE ON DATABASE postgres TO {SINK_ROLE}")
        conn.execute(f"GRANT CREATE, USAGE ON SCHEMA public TO {SINK_ROLE}")
    return server.url(user=SINK_ROLE, password=password)


@contextmanager
def target(workdir: str) -> Iterator[BenchTarget]:
    with PostgresServer() as server:
        url = _sink_role(server)
        yield BenchTarget({"url": url}, _raw_load(url), _check)
