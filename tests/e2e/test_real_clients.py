"""Real clients end to end: pgbench and sysbench write while a pipeline loads and follows their tables.

The tables are filled before the pipeline exists (``pgbench -i``, ``sysbench prepare``); the pipeline
is created while the benchmark writes, loads the tables through snapshot batches interleaved with
CDC batches, follows the writes until the benchmark stops and the log is drained. Every batch is
applied as captured to a DuckDB and a ClickHouse sink, and in a shuffled order to a PostgreSQL sink;
each sink then equals the source row by row.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field

import pytest

from dbmazz_connectors.changelog import BatchManifest, ChangeLog
from dbmazz_connectors.core.protocols import Sink, Source
from dbmazz_connectors.core.schema import TableSchema
from dbmazz_connectors.engine import apply_batch, capture_range, set_up_source
from dbmazz_connectors.snapshots import SnapshotPlan, SnapshotSettings, capture_snapshot_batch, plan_snapshot
from infra.clients import (
    PGBENCH_TABLES,
    ClientResult,
    ClientRun,
    pgbench_init,
    start_pgbench,
    start_sysbench,
    sysbench_prepare,
)
from tests.connectors.sinks._workload import assert_sink_equals

PIPELINE = "bench"
WINDOW = 100_000  # keys compared at a time (bounds memory on the large runs)
SHUFFLE_SEED = 20240611


@dataclass(frozen=True)
class Size:
    """One run: ``rows`` is pgbench's scale or sysbench's rows per table; the client writes ``seconds``."""

    rows: int
    seconds: int
    chunk_rows: int
    clients: int = 4


# ---- the pipeline, plain Python


@dataclass
class Pipeline:
    """A live pipeline: captures snapshot and CDC batches, applies each to the ``live`` sinks as captured."""

    source: Source
    changelog: ChangeLog
    position: object  # the source position the next CDC batch starts after
    live: dict[str, Sink]
    captured: list[BatchManifest] = field(default_factory=list)

    def _record(self, manifest: BatchManifest) -> None:
        self.captured.append(manifest)
        for sink in self.live.values():
            apply_batch(self.changelog, sink, PIPELINE, manifest.batch_id)

    def capture_changes(self) -> BatchManifest | None:
        """One CDC batch from the last position to the source's position now (None if it has not moved)."""
        end = self.source.current_position()
        if end.version <= self.position.version:
            return None
        manifest = capture_range(self.source, self.changelog, PIPELINE, self.position, end)
        self.position = manifest.end
        self._record(manifest)
        return manifest

    def load(self, plan: SnapshotPlan, settings: SnapshotSettings) -> None:
        """The initial load: each snapshot batch, then the changes committed while it was read."""
        for batch_id in plan.batch_ids():
            self._record(capture_snapshot_batch(self.source, self.changelog, PIPELINE, batch_id, settings))
            self.capture_changes()

    def follow(self, client: ClientRun, pause: float = 0.5) -> None:
        while client.running():
            time.sleep(pause)
            self.capture_changes()

    def drain(self) -> None:
        """Capture until a batch brings nothing of the tables: the sinks have seen every change."""
        self.capture_changes()
        last = self.capture_changes()
        assert last is None or last.rows == 0, (
            f"a batch after the client stopped still had {last.rows} changes"
        )

    def apply_shuffled(self, sink: Sink, seed: int) -> None:
        order = [m.batch_id for m in self.captured]
        random.Random(seed).shuffle(order)
        for batch_id in order:
            apply_batch(self.changelog, sink, PIPELINE, batch_id)

    def rows_during_load(self) -> int:
        """Changes captured in CDC batches before the last snapshot batch: writes the load had to merge."""
        last_snapshot = max(i for i, m in enumerate(self.captured) if m.is_snapshot)
        return sum(m.rows for m in self.captured[:last_snapshot] if not m.is_snapshot)


# ---- reading both sides the way a user does


@dataclass(frozen=True)
class Reader:
    """One side of the comparison: how a table's relation is named and quoted, and how a query runs."""

    relation: Callable[[TableSchema], str]
    quote: Callable[[str], str]
    fetch: Callable[[str], list]

    def rows(self, schema: TableSchema, lo: int, hi: int) -> list[tuple]:
        cols = ", ".join(self.quote(c) for c in schema.column_names)
        key = self.quote(schema.primary_key[0])
        return [
            tuple(r)
            for r in self.fetch(
                f"SELECT {cols} FROM {self.relation(schema)} "
                f"WHERE {key} >= {int(lo)} AND {key} < {int(hi)} ORDER BY {key}"
            )
        ]

    def max_key(self, schema: TableSchema) -> int:
        key = self.quote(schema.primary_key[0])
        found = self.fetch(f"SELECT max({key}) FROM {self.relation(schema)}")[0][0]
        return int(found or 0)


def _sink_state(sink: Sink, schema: TableSchema):
    state = sink.table_state(schema.qualified_name)
    assert state is not None, f"the sink has no table for {schema.qualified_name}"
    return state


def sink_reader(name: str, sink: Sink) -> Reader:
    """DuckDB and PostgreSQL: the target table; ClickHouse: its ``<table>_current`` view (FINAL, live rows)."""
    if name == "clickhouse":
        return Reader(lambda s: sink.q(_sink_state(sink, s).target + "_current"), sink.q, sink.query_rows)
    return Reader(lambda s: sink.target(_sink_state(sink, s)), sink.q, sink.fetchall)


def pg_reader(conn) -> Reader:
    return Reader(
        lambda s: f'"{s.schema}"."{s.name}"', lambda c: f'"{c}"', lambda q: conn.execute(q).fetchall()
    )


def mysql_reader(conn) -> Reader:
    def fetch(query: str) -> list:
        with conn.cursor() as cur:
            cur.execute(query)
            return list(cur.fetchall())

    return Reader(lambda s: f"`{s.schema}`.`{s.name}`", lambda c: f"`{c}`", fetch)


def assert_sinks_equal_source(schemas: list[TableSchema], source: Reader, sinks: dict[str, Sink]) -> int:
    """Every sink holds exactly the source's rows, compared row by row in key windows; the rows compared."""
    readers = {name: sink_reader(name, sink) for name, sink in sinks.items()}
    compared = 0
    for schema in schemas:
        top = max(reader.max_key(schema) for reader in (source, *readers.values()))
        for lo in range(0, top + 1, WINDOW):
            want = source.rows(schema, lo, lo + WINDOW)
            compared += len(want)
            for name, reader in readers.items():
                try:
                    assert_sink_equals(reader.rows(schema, lo, lo + WINDOW), want)
                except AssertionError as exc:
                    raise AssertionError(
                        f"{name} sink, {schema.qualified_name} keys [{lo}, {lo + WINDOW}): {exc}"
                    ) from None
    return compared


# ---- the runs


def _run(
    source: Source,
    changelog: ChangeLog,
    sinks: dict[str, Sink],
    start,
    client: ClientRun,
    tables: list[str],
    size: Size,
) -> tuple[Pipeline, ClientResult]:
    """Create the pipeline while ``client`` writes, load, follow until it stops, drain; then the shuffled sink."""
    settings = SnapshotSettings(chunk_rows=size.chunk_rows, chunks_per_batch=2, parallelism=2)
    pipeline = Pipeline(source, changelog, start, {n: s for n, s in sinks.items() if n != "postgres"})
    assert client.running(), "the client should be writing when the pipeline is created"
    plan = plan_snapshot(source, changelog, PIPELINE, tables, settings, reason="initial load")
    pipeline.load(plan, settings)
    pipeline.follow(client)
    result = client.wait(60)
    pipeline.drain()
    pipeline.apply_shuffled(sinks["postgres"], SHUFFLE_SEED)
    return pipeline, result


def _report(what: str, pipeline: Pipeline, result: ClientResult, rows: int, began: float) -> None:
    snapshot = [m for m in pipeline.captured if m.is_snapshot]
    cdc = [m for m in pipeline.captured if not m.is_snapshot]
    print(
        f"\n{what}: {rows} rows compared in 3 sinks, {time.monotonic() - began:.1f}s in all; "
        f"{result.transactions} client transactions in {result.seconds}s; "
        f"{len(snapshot)} snapshot batches ({sum(m.rows for m in snapshot)} rows), "
        f"{len(cdc)} CDC batches ({sum(m.rows for m in cdc)} changes, "
        f"{pipeline.rows_during_load()} during the load)"
    )


def _assert_pipeline_worked(pipeline: Pipeline, result: ClientResult) -> None:
    assert result.transactions > 0, f"the client committed nothing:\n{result.output[-1500:]}"
    assert pipeline.rows_during_load() > 0, "the client's writes should have overlapped the initial load"


def _pgbench(pg_db, login, changelog, make_sinks, size: Size) -> None:
    began = time.monotonic()
    pgbench_init(pg_db.server, pg_db.name, size.rows)  # before the pipeline exists
    tables = [f"public.{t}" for t in PGBENCH_TABLES]
    sinks = make_sinks(PIPELINE)
    with start_pgbench(pg_db.server, pg_db.name, size.clients, size.seconds) as client:
        login.grant(tables, publication=f"dbmazz_{PIPELINE}")
        source = login.source(tables, pipeline=PIPELINE)
        try:
            set_up_source(source)
            pipeline, result = _run(
                source, changelog, sinks, source.checkpoint_position(), client, tables, size
            )
            schemas = [source.table_schemas()[t] for t in tables]
        finally:
            source.disconnect()
    _assert_pipeline_worked(pipeline, result)
    with pg_db.connect() as conn:
        rows = assert_sinks_equal_source(schemas, pg_reader(conn), sinks)
    assert rows >= size.rows * 100_000
    _report(f"pgbench -s {size.rows} -c {size.clients} -T {size.seconds}", pipeline, result, rows, began)


def _sysbench(mysql_db, login, changelog, make_sinks, size: Size) -> None:
    from dbmazz_connectors.sources.mysql import MySqlSource

    began = time.monotonic()
    server = mysql_db.server
    sysbench_prepare(server, mysql_db.name, 2, size.rows)  # before the pipeline exists
    tables = [f"{mysql_db.name}.sbtest{n}" for n in (1, 2)]
    sinks = make_sinks(PIPELINE)
    with start_sysbench(server, mysql_db.name, 2, size.rows, size.clients, size.seconds) as client:
        source = MySqlSource.from_config({"url": login.url, "pipeline": PIPELINE, "tables": tables})
        source.connect()
        try:
            set_up_source(source)
            pipeline, result = _run(source, changelog, sinks, source.current_position(), client, tables, size)
            schemas = [source.table_schemas()[t] for t in tables]
        finally:
            source.disconnect()
    _assert_pipeline_worked(pipeline, result)
    with closing(mysql_db.connect()) as conn:
        rows = assert_sinks_equal_source(schemas, mysql_reader(conn), sinks)
    assert rows >= size.rows  # sysbench deletes and re-inserts: the row count stays about 2 x table size
    _report(
        f"sysbench oltp_read_write --tables=2 --table-size={size.rows} --time={size.seconds}",
        pipeline,
        result,
        rows,
        began,
    )


def _mysql_snapshots() -> bool:
    from dbmazz_connectors.sources.mysql import MySqlSource

    return hasattr(MySqlSource, "read_snapshot")


needs_mysql_snapshots = pytest.mark.skipif(
    not _mysql_snapshots(), reason="the MySQL source reads no snapshots yet"
)


def test_pgbench_loaded_and_followed_into_every_sink(pg_db, pg_capture_login, changelog, make_sinks):
    _pgbench(pg_db, pg_capture_login, changelog, make_sinks, Size(rows=1, seconds=15, chunk_rows=25_000))


@needs_mysql_snapshots
def test_sysbench_loaded_and_followed_into_every_sink(mysql_db, mysql_capture_login, changelog, make_sinks):
    _sysbench(
        mysql_db, mysql_capture_login, changelog, make_sinks, Size(rows=10_000, seconds=15, chunk_rows=5_000)
    )


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_pgbench_scale_10_for_two_minutes(pg_db, pg_capture_login, changelog, make_sinks):
    _pgbench(pg_db, pg_capture_login, changelog, make_sinks, Size(rows=10, seconds=120, chunk_rows=100_000))


@pytest.mark.slow
@pytest.mark.timeout(1800)
@needs_mysql_snapshots
def test_sysbench_100k_rows_for_two_minutes(mysql_db, mysql_capture_login, changelog, make_sinks):
    _sysbench(
        mysql_db,
        mysql_capture_login,
        changelog,
        make_sinks,
        Size(rows=100_000, seconds=120, chunk_rows=25_000),
    )
