"""Tombstone storage before and after the horizon passes, per sink, and replays inside the horizon.

    python bench/tombstones.py [--quick] [--sink clickhouse] [--sink duckdb] [--sink postgres] [--sink starrocks]

Stages four batches in a change log: ``b1`` inserts ``deletes + inside + live`` keys, ``b2`` deletes ``deletes``
of them (1,000,000; 100,000 with ``--quick``), ``b3`` deletes ``inside`` (1,000) more, ``b4`` inserts one key; applies
them. Retention then removes ``b1`` and ``b2`` from the change log and the sink forgets the tombstones below the new
horizon (``prune_tombstones``): the 1M go, the 1,000 of ``b3`` stay (inside the horizon). ``b3`` and ``b4`` are
replayed from the change log (new batch ids, as a re-run would) and the sink's live rows are compared with the
source's row by row. Then the horizon passes ``b3`` too, its tombstones go, and the rows are compared again.

Writes ``bench/results/tombstones.json`` (``..._quick.json``): per sink the storage the deleted keys take before,
with the 1,000 kept, and after, in bytes. The figure is the bytes reclaimed of the sink that keeps the largest share;
the reference is its bytes before, so ``ratio`` = share reclaimed (target 0.95).

* ClickHouse: bytes on disk of the table merged into one part (``OPTIMIZE FINAL``: superseded rows go, tombstones
  stay) minus those of a fresh table of only the live rows, merged the same way.
* DuckDB: blocks of the tombstone table (``pragma_storage_info``) times the block size, after a checkpoint.
* PostgreSQL: ``pg_total_relation_size`` of the tombstone table (heap, primary-key index, free-space and
  visibility maps), read after a plain ``VACUUM`` of it (what autovacuum does on its own; the sink role owns the
  table); the size right after the prune, before any vacuum, and after ``VACUUM FULL`` are in the details.
* StarRocks: the stand-in (``tests/fixtures/starrocks_standin.py``; no StarRocks runs here). The sink keeps a
  tombstone as a row of the Primary Key table itself (``_dbmazz_is_deleted = 1``), so the figure is that table's
  bytes minus those of a copy of only its live rows, in the stand-in's DuckDB file after a checkpoint; the
  tombstone row count (what StarRocks would hold) is in the details. On StarRocks a ``DELETE`` marks rows in
  delete vectors and compaction frees their space later: the bytes here are the stand-in's, not StarRocks'.

The machine is shared: a time is indicative only.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import write_result  # noqa: E402
from dbmazz_connectors.changelog import ChangeLog  # noqa: E402
from dbmazz_connectors.core import OP_DELETE, OP_INSERT, Heartbeat, LogicalType, Rows, create_sink  # noqa: E402
from dbmazz_connectors.core.protocols import BatchRef  # noqa: E402
from dbmazz_connectors.core.schema import Column, TableSchema  # noqa: E402
from dbmazz_connectors.engine import apply_batch, tombstone_horizon  # noqa: E402
from dbmazz_connectors.sources.postgres.position import Lsn  # noqa: E402

ITEMS = TableSchema(
    "public",
    "items",
    (
        Column("id", LogicalType.parse("int64"), False),
        Column("qty", LogicalType.parse("int32")),
        Column("label", LogicalType.parse("string")),
    ),
    ("id",),
)


def _rows(op: int, version: int, first: int, count: int) -> Rows:
    ids = pa.array(range(first, first + count), pa.int64())
    data = {
        "id": ids,
        "qty": pa.array([i % 1000 for i in range(count)], pa.int32()),
        "label": pa.array([f"item-{i}" for i in range(first, first + count)]),
        "_dbmazz_op": pa.array([op] * count, pa.int8()),
        "_dbmazz_version": pa.array([version] * count, pa.uint64()),
        "_dbmazz_commit_ts": pa.array([version] * count, pa.timestamp("us", "UTC")),
        "_dbmazz_unknown_columns": pa.nulls(count, pa.list_(pa.string())),
    }
    schema = ITEMS.arrow_schema()
    return Rows(ITEMS, pa.table({f.name: data[f.name].cast(f.type) for f in schema}, schema=schema))


INSIDE = 1_000  # deletes kept inside the horizon (b3): replayed, then forgotten when the horizon passes them


def stage(changelog: ChangeLog, deletes: int, live: int) -> dict[str, list[Rows]]:
    """The four batches (see the module docstring); returns their events by batch id, in order."""
    keys = deletes + INSIDE + live
    batches = {
        "b1": (0, 1000, [_rows(OP_INSERT, 500, 1, keys)]),
        "b2": (1000, 2000, [_rows(OP_DELETE, 1500, 1, deletes)]),
        "b3": (2000, 3000, [_rows(OP_DELETE, 2500, deletes + 1, INSIDE)]),
        "b4": (3000, 4000, [_rows(OP_INSERT, 3500, keys + 1, 1)]),
    }
    for batch_id, (start, end, events) in batches.items():
        writer = changelog.writer("bench", batch_id, Lsn(start))
        writer.declare_table(ITEMS)
        for event in events:
            writer.add(event)
        writer.add(Heartbeat(Lsn(end)))
        writer.commit()
    return {batch_id: events for batch_id, (_, _, events) in batches.items()}


def source_rows(events: dict[str, list[Rows]]) -> list[tuple]:
    """The source's live rows (id, qty, label) after every batch: the last change per key, deletes removed."""
    last: dict[int, tuple | None] = {}
    for batch in events.values():
        for rows in batch:
            table = rows.data
            ops = table.column("_dbmazz_op").to_pylist()
            for op, i, q, label in zip(
                ops, *(table.column(c).to_pylist() for c in ("id", "qty", "label")), strict=True
            ):
                last[i] = None if op == OP_DELETE else (i, q, label)
    return sorted(row for row in last.values() if row is not None)


def _diffs(sink_rows: list[tuple], expected: list[tuple]) -> int:
    """Rows that differ between the sink and the source (missing, extra or with other values)."""
    got = {tuple(r) for r in sink_rows}
    return len(got.symmetric_difference(expected)) + (len(sink_rows) - len(got))


@dataclass
class Measure:
    """How one sink is measured. ``tomb_bytes(sink) -> (bytes, extra details)``: the storage its tombstones take;
    ``live_bytes(sink)``: that of its live rows; ``tomb_rows(sink)``: tombstones held; ``live_rows(sink)``: the
    live (id, qty, label) rows."""

    tomb_bytes: Callable[[Any], tuple[int, dict]]
    live_bytes: Callable[[Any], int]
    tomb_rows: Callable[[Any], int]
    live_rows: Callable[[Any], list[tuple]]


# ---- ClickHouse


def _clickhouse_bytes(sink, table: str) -> int:
    """Bytes of the table merged into one part: what it settles to (older rows of a key merged away, not tombstones)."""
    sink.command(f"OPTIMIZE TABLE {table} FINAL")
    rows = sink.query_rows(
        "SELECT sum(bytes_on_disk) FROM system.parts WHERE active AND database = currentDatabase() "
        "AND table = %(t)s",
        {"t": table},
    )
    return int(rows[0][0] or 0)


def _clickhouse_live_bytes(sink) -> int:
    sink.command("DROP TABLE IF EXISTS items_live_copy SYNC")
    sink.command(
        "CREATE TABLE items_live_copy ENGINE = ReplacingMergeTree ORDER BY id AS "
        "SELECT * FROM items FINAL WHERE _dbmazz_is_deleted = 0"
    )
    size = _clickhouse_bytes(sink, "items_live_copy")
    sink.command("DROP TABLE items_live_copy SYNC")
    return size


def _clickhouse(workdir: str, deletes: int, live: int) -> dict:
    import secrets

    from bench._sink_bench_clickhouse import _GRANTS, SINK_USER
    from infra.clickhouse import ClickHouseServer

    password = secrets.token_hex(12)
    grants = [*_GRANTS, "GRANT SELECT ON system.parts, OPTIMIZE ON bench.*"]  # to measure merged parts' bytes
    with ClickHouseServer(users={SINK_USER: (password, grants)}) as server:
        admin = server.client()
        admin.command("CREATE DATABASE bench")
        admin.close()

        def tomb(sink) -> tuple[int, dict]:
            measured = _clickhouse_bytes(sink, "items") - _clickhouse_live_bytes(sink)
            # a difference of two sizes, which may dip below 0; the figure uses it clamped at 0
            return max(measured, 0), {"measured": measured}

        measure = Measure(
            tomb,
            _clickhouse_live_bytes,
            lambda sink: int(
                sink.query_rows(  # keys whose winning row is a tombstone (FINAL would hide them)
                    "SELECT countIf(d = 1) FROM (SELECT argMax(_dbmazz_is_deleted, _dbmazz_version) AS d "
                    "FROM items GROUP BY id)"
                )[0][0]
            ),
            lambda sink: sink.query_rows("SELECT id, qty, label FROM items_current ORDER BY id"),
        )
        return _run(
            {"url": server.url("bench", user=SINK_USER, password=password)}, workdir, deletes, live, measure
        )


# ---- DuckDB


def _duckdb_blocks(sink, table: str) -> int:
    sink.con.execute("CHECKPOINT")
    block = int(sink.con.execute("SELECT block_size FROM pragma_database_size()").fetchone()[0])
    blocks = sink.con.execute(
        "SELECT count(DISTINCT block_id) FROM pragma_storage_info(?) WHERE persistent", [table]
    ).fetchone()[0]
    return int(blocks) * block


def _tomb_table(sink) -> str:
    """The tombstone table of public.items, from the SQL sinks' metadata (``_dbmazz.tables``)."""
    return str(sink.fetchall("SELECT tombstones FROM _dbmazz.tables WHERE table_name = 'public.items'")[0][0])


def _sql_measure(tomb_bytes, live_bytes) -> Measure:
    return Measure(
        tomb_bytes,
        live_bytes,
        lambda sink: int(sink.fetchall(f'SELECT count(*) FROM _dbmazz."{_tomb_table(sink)}"')[0][0]),
        lambda sink: sink.fetchall('SELECT id, qty, label FROM "public"."items" ORDER BY id'),
    )


def _duckdb(workdir: str, deletes: int, live: int) -> dict:
    measure = _sql_measure(
        lambda sink: (_duckdb_blocks(sink, f'_dbmazz."{_tomb_table(sink)}"'), {}),
        lambda sink: _duckdb_blocks(sink, "public.items"),
    )
    return _run({"url": f"duckdb:///{workdir}/sink.duckdb"}, workdir, deletes, live, measure)


# ---- PostgreSQL


def _postgres(workdir: str, deletes: int, live: int) -> dict:
    import psycopg

    from bench._sink_bench_postgres import _sink_role
    from infra.postgres import PostgresServer

    with PostgresServer() as server, psycopg.connect(server.url(), autocommit=True) as admin:
        url = _sink_role(server)
        admin.execute(
            "CREATE EXTENSION pgstattuple"
        )  # the DBA's view of what the files hold (not the sink's)
        # the sink role owns the tables it created: it may VACUUM them (a connection of its own, outside the sink)
        with psycopg.connect(url, autocommit=True) as conn:

            def size(relation: str) -> int:
                return int(
                    conn.execute("SELECT pg_total_relation_size(%s::regclass)", (relation,)).fetchone()[0]
                )

            def inside(relation: str) -> dict:
                """Sizes of heap and index files, and how much of them holds rows (pgstattuple, pgstatindex)."""
                heap, index, live_tuples, free = admin.execute(
                    "SELECT pg_relation_size(%s::regclass), pg_indexes_size(%s::regclass), t.tuple_len, "
                    "t.free_space FROM pgstattuple(%s::regclass) t",
                    (relation, relation, relation),
                ).fetchone()
                index_name = admin.execute(
                    "SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = %s::regclass",
                    (relation,),
                ).fetchone()[0]
                leaf, deleted, empty = admin.execute(
                    "SELECT leaf_pages, deleted_pages, empty_pages FROM pgstatindex(%s)", (index_name,)
                ).fetchone()
                return {
                    "heap": int(heap),
                    "heap_live_tuple_bytes": int(live_tuples),
                    "heap_free_bytes": int(free),
                    "index": int(index),
                    "index_leaf_pages": int(leaf),
                    "index_deleted_or_empty_pages": int(deleted) + int(empty),
                }

            def tomb(sink) -> tuple[int, dict]:
                relation = f'_dbmazz."{_tomb_table(sink)}"'
                unvacuumed = size(relation)
                conn.execute(f"VACUUM {relation}")
                return size(relation), {"before_vacuum": unvacuumed, **inside(relation)}

            def live_bytes(sink) -> int:
                conn.execute('VACUUM "public"."items"')
                return size('"public"."items"')

            result = _run({"url": url}, workdir, deletes, live, _sql_measure(tomb, live_bytes))
            # what rewriting the table gives back (VACUUM FULL takes an ACCESS EXCLUSIVE lock on the tombstone
            # table while it runs: applies to that table wait; with its rows gone it takes milliseconds)
            name = conn.execute(
                "SELECT tombstones FROM _dbmazz.tables WHERE table_name = 'public.items'"
            ).fetchone()
            relation = f'_dbmazz."{name[0]}"'
            began = time.perf_counter()
            conn.execute(f"VACUUM FULL {relation}")
            result["tombstone_bytes_after_vacuum_full"] = size(relation)
            result["vacuum_full_seconds"] = round(time.perf_counter() - began, 3)
            return result


# ---- StarRocks (the stand-in)


def _starrocks(workdir: str, deletes: int, live: int) -> dict:
    from tests.fixtures.starrocks_standin import StarRocksStandIn

    database = "bench"
    with StarRocksStandIn(workdir) as standin:

        def table_bytes(table: str) -> int:
            with standin.lock:  # no load runs meanwhile
                cur = standin.cursor()
                try:
                    cur.execute("CHECKPOINT")
                    block = int(cur.execute("SELECT block_size FROM pragma_database_size()").fetchone()[0])
                    blocks = cur.execute(
                        "SELECT count(DISTINCT block_id) FROM pragma_storage_info(?) WHERE persistent",
                        [f"{database}.{table}"],
                    ).fetchone()[0]
                finally:
                    cur.close()
            return int(blocks) * block

        def live_bytes(sink) -> int:
            with standin.lock:
                cur = standin.cursor()
                try:
                    cur.execute(
                        f"CREATE OR REPLACE TABLE {database}.items_live_copy AS "
                        f"SELECT * FROM {database}.items WHERE NOT _dbmazz_is_deleted"
                    )
                finally:
                    cur.close()
            size = table_bytes("items_live_copy")
            with standin.lock:
                cur = standin.cursor()
                try:
                    cur.execute(f"DROP TABLE {database}.items_live_copy")
                finally:
                    cur.close()
            return size

        def stored_rows() -> int:
            """Rows the table's row groups hold on disk, deleted ones included (DuckDB drops a row group at a
            checkpoint once all its rows are deleted; one partly deleted keeps them)."""
            with standin.lock:
                cur = standin.cursor()
                try:
                    return int(
                        cur.execute(
                            "SELECT coalesce(sum(count), 0) FROM pragma_storage_info(?) WHERE persistent "
                            "AND column_id = 0",
                            [f"{database}.items"],
                        ).fetchone()[0]
                    )
                finally:
                    cur.close()

        def tomb(sink) -> tuple[int, dict]:
            measured = table_bytes("items") - live_bytes(sink)
            return max(measured, 0), {"measured": measured, "rows_stored_with_deleted": stored_rows()}

        measure = Measure(
            tomb,
            live_bytes,
            lambda sink: int(
                sink.query_rows("SELECT count(*) FROM items WHERE _dbmazz_is_deleted = 1")[0][0]
            ),
            lambda sink: sink.query_rows("SELECT id, qty, label FROM items_current ORDER BY id"),
        )
        result = _run({"url": standin.url(database)}, workdir, deletes, live, measure)
        result["note"] = (
            "the stand-in's storage (a DuckDB file), not StarRocks': the sink keeps tombstones as rows of the Primary "
            "Key table and forgets them with DELETE ... WHERE _dbmazz_is_deleted = 1 AND _dbmazz_version < horizon; "
            "on StarRocks the rows go at once and their space with the next compaction"
        )
        return result


# ---- the scenario


def _run(config: dict, workdir: str, deletes: int, live: int, measure: Measure) -> dict:
    changelog = ChangeLog(f"{workdir}/changelog")
    events = stage(changelog, deletes, live)
    expected = source_rows(events)
    sink = create_sink({**config, "pipeline": "bench"})
    sink.connect()
    try:
        began = time.perf_counter()
        for batch_id in events:
            apply_batch(changelog, sink, "bench", batch_id)
        apply_seconds = time.perf_counter() - began
        before, before_details = measure.tomb_bytes(sink)
        tombs_before = measure.tomb_rows(sink)

        for batch_id in ("b1", "b2"):  # retention: the oldest batches leave the change log
            changelog.delete_batch("bench", batch_id)
        began = time.perf_counter()
        forgotten = sink.prune_tombstones(None, tombstone_horizon(changelog, "bench"))
        prune_seconds = time.perf_counter() - began
        kept, kept_details = measure.tomb_bytes(sink)
        tombs_kept = measure.tomb_rows(sink)
        for batch_id in ("b3", "b4"):  # replayed from the change log: the kept tombstones still win
            sink.write_batch(
                changelog.read_batch("bench", batch_id, ITEMS.qualified_name),
                BatchRef("bench", batch_id + "-again"),
            )
        replayed = measure.live_rows(sink)

        changelog.delete_batch("bench", "b3")  # the horizon passes the last deletes too
        forgotten_later = sink.prune_tombstones(None, tombstone_horizon(changelog, "bench"))
        after, after_details = measure.tomb_bytes(sink)
        final = measure.live_rows(sink)
        result = {
            "tombstone_bytes_before": before,
            f"tombstone_bytes_with_{INSIDE}_inside_the_horizon": kept,
            "tombstone_bytes_after": after,
            "live_bytes": measure.live_bytes(sink),
            "tombstone_rows": {
                "before": tombs_before,
                "inside_the_horizon": tombs_kept,
                "after": measure.tomb_rows(sink),
            },
            "forgotten": forgotten,
            "forgotten_when_the_horizon_passed_b3": forgotten_later,
            "replay_inside_the_horizon": {
                "replayed": ["b3", "b4"],
                "rows_compared": len(expected),
                "diffs": _diffs(replayed, expected),
            },
            "rows_compared_at_the_end": len(expected),
            "diffs_at_the_end": _diffs(final, expected),
            "live_rows": len(final),
            "apply_seconds": round(apply_seconds, 2),
            "prune_seconds": round(prune_seconds, 2),
        }
        if before_details:  # how each of the three sizes was made up (see tomb_bytes of the sink)
            result["measurements"] = {
                "before": before_details,
                "inside_the_horizon": kept_details,
                "after": after_details,
            }
    finally:
        sink.disconnect()
    wrong = (
        forgotten != deletes
        or forgotten_later != INSIDE
        or result["replay_inside_the_horizon"]["diffs"]
        or result["diffs_at_the_end"]
        or result["live_rows"] != live + 1
    )
    if wrong:
        raise SystemExit(
            f"expected {deletes} then {INSIDE} forgotten, {live + 1} live rows, 0 diffs; got {result}"
        )
    return result


SINKS = {"clickhouse": _clickhouse, "duckdb": _duckdb, "postgres": _postgres, "starrocks": _starrocks}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100k deletes instead of 1M")
    parser.add_argument("--sink", action="append", choices=sorted(SINKS))
    args = parser.parse_args()
    deletes = 100_000 if args.quick else 1_000_000
    live = deletes // 10
    load = os.getloadavg()
    per_sink = {}
    for name in args.sink or sorted(SINKS):
        with tempfile.TemporaryDirectory(prefix=f"dbmazz-tomb-{name}-") as workdir:
            per_sink[name] = SINKS[name](workdir, deletes, live)
            print(name, per_sink[name], file=sys.stderr)
    # the sink that keeps the largest share of its tombstone storage after the horizon passed; not the StarRocks
    # stand-in: its bytes are those of its DuckDB file (whose partly deleted row groups keep every row version),
    # which say nothing about StarRocks; its tombstone rows are in the details
    real = [n for n in per_sink if n != "starrocks"] or list(per_sink)
    worst = max(
        real,
        key=lambda n: per_sink[n]["tombstone_bytes_after"] / max(per_sink[n]["tombstone_bytes_before"], 1),
    )
    w = per_sink[worst]
    write_result(
        "tombstones" + ("_quick" if args.quick else ""),
        figure=f"tombstone bytes reclaimed once the horizon passed ({worst}, the sink that keeps the most)",
        value=w["tombstone_bytes_before"] - w["tombstone_bytes_after"],
        reference=f"{worst} tombstone bytes before (live table: see details)",
        reference_value=max(w["tombstone_bytes_before"], 1),
        target_ratio=0.95,
        details={
            "deletes": deletes,
            "deletes_inside_the_horizon": INSIDE,
            "live_keys": live + 1,
            "sinks": per_sink,
            "load_average_1_5_15_min": [round(x, 2) for x in (*load, *os.getloadavg())],
            "note": "measured on a shared 2-core machine (load averages at the start, then at the end); "
            "apply_seconds and prune_seconds are indicative. PostgreSQL's bytes are the tombstone table's files after "
            "the sink's prune and a plain VACUUM: a plain VACUUM alone frees the space inside the files but rarely "
            "shrinks them (the tombstones kept inside the horizon sit at the heap's end, the key index never "
            "shrinks), so the sink rewrites the table with VACUUM FULL after forgetting >= 10,000 tombstones, more "
            "than remain; tombstone_bytes_after_vacuum_full: an explicit VACUUM FULL afterwards. "
            "StarRocks: the stand-in's storage (see its note), left out of the figure; its tombstone_rows are what "
            "StarRocks would hold",
        },
    )


if __name__ == "__main__":
    main()
