"""Tombstone storage before and after the horizon passes, per sink.

    python bench/tombstones.py [--quick] [--sink clickhouse] [--sink duckdb]

Stages three batches in a change log: ``b1`` inserts ``deletes + live`` keys, ``b2`` deletes ``deletes`` of them
(1,000,000; 100,000 with ``--quick``), ``b3`` one more insert; applies them, then removes ``b1`` and ``b2`` from the
change log (retention) and lets the sink forget the tombstones below the new horizon (``prune_tombstones``).
Writes ``bench/results/tombstones.json`` (``..._quick.json``): per sink the storage the deleted keys take before
and after, in bytes; the figure is after/before of the worst sink; the reference is its live rows' storage (as a
fraction of the tombstone storage before), so ``ratio`` = live bytes / tombstone bytes left (target: at least 10).

ClickHouse: bytes on disk of the table merged into one part (``OPTIMIZE FINAL``: superseded rows go, tombstones
stay) minus those of a fresh table of only the live rows, merged the same way. DuckDB: blocks of the tombstone
table (``pragma_storage_info``) times the block size, after a checkpoint. The machine is shared: a time is
indicative only.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import write_result  # noqa: E402
from dbmazz_connectors.changelog import ChangeLog  # noqa: E402
from dbmazz_connectors.core import OP_DELETE, OP_INSERT, Heartbeat, LogicalType, Rows, create_sink  # noqa: E402
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


def stage(changelog: ChangeLog, deletes: int, live: int) -> list[str]:
    batches = {
        "b1": (0, 1000, [_rows(OP_INSERT, 500, 1, deletes + live)]),
        "b2": (1000, 2000, [_rows(OP_DELETE, 1500, 1, deletes)]),
        "b3": (2000, 3000, [_rows(OP_INSERT, 2500, deletes + live + 1, 1)]),
    }
    for batch_id, (start, end, events) in batches.items():
        writer = changelog.writer("bench", batch_id, Lsn(start))
        writer.declare_table(ITEMS)
        for event in events:
            writer.add(event)
        writer.add(Heartbeat(Lsn(end)))
        writer.commit()
    return list(batches)


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
        return _run(
            {"url": server.url("bench", user=SINK_USER, password=password)},
            workdir,
            deletes,
            live,
            lambda sink: _clickhouse_bytes(sink, "items") - _clickhouse_live_bytes(sink),
            _clickhouse_live_bytes,
        )


def _duckdb_blocks(sink, table: str) -> int:
    sink.con.execute("CHECKPOINT")
    block = int(sink.con.execute("SELECT block_size FROM pragma_database_size()").fetchone()[0])
    blocks = sink.con.execute(
        "SELECT count(DISTINCT block_id) FROM pragma_storage_info(?) WHERE persistent", [table]
    ).fetchone()[0]
    return int(blocks) * block


def _duckdb(workdir: str, deletes: int, live: int) -> dict:
    def tomb(sink) -> int:
        state = sink.table_state("public.items")
        return _duckdb_blocks(sink, sink.tomb(state))

    return _run(
        {"url": f"duckdb:///{workdir}/sink.duckdb"},
        workdir,
        deletes,
        live,
        tomb,
        lambda sink: _duckdb_blocks(sink, "public.items"),
    )


def _run(config: dict, workdir: str, deletes: int, live: int, tomb_bytes, live_bytes) -> dict:
    changelog = ChangeLog(f"{workdir}/changelog")
    ids = stage(changelog, deletes, live)
    sink = create_sink({**config, "pipeline": "bench"})
    sink.connect()
    for batch_id in ids:
        apply_batch(changelog, sink, "bench", batch_id)
    before = tomb_bytes(sink)
    for batch_id in ids[:2]:
        changelog.delete_batch("bench", batch_id)
    began = time.perf_counter()
    forgotten = sink.prune_tombstones(None, tombstone_horizon(changelog, "bench"))
    seconds = time.perf_counter() - began
    result = {
        "tombstone_bytes_before": before,
        # ClickHouse: a difference of two sizes, which may dip below 0; the figure uses it clamped at 0
        "tombstone_bytes_after_measured": tomb_bytes(sink),
        "live_bytes": live_bytes(sink),
        "forgotten": forgotten,
        "prune_seconds": round(seconds, 2),
        "live_rows": sink.row_count("public.items"),
    }
    result["tombstone_bytes_after"] = max(result["tombstone_bytes_after_measured"], 0)
    sink.disconnect()
    if forgotten != deletes or result["live_rows"] != live + 1:
        raise SystemExit(f"expected {deletes} forgotten and {live + 1} live rows, got {result}")
    return result


SINKS = {"clickhouse": _clickhouse, "duckdb": _duckdb}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100k deletes instead of 1M")
    parser.add_argument("--sink", action="append", choices=sorted(SINKS))
    args = parser.parse_args()
    deletes = 100_000 if args.quick else 1_000_000
    live = deletes // 10
    per_sink = {}
    for name in args.sink or sorted(SINKS):
        with tempfile.TemporaryDirectory(prefix=f"dbmazz-tomb-{name}-") as workdir:
            per_sink[name] = SINKS[name](workdir, deletes, live)
    # the sink that keeps the largest share of its tombstone storage after the horizon passed
    worst = max(
        per_sink,
        key=lambda n: per_sink[n]["tombstone_bytes_after"] / max(per_sink[n]["tombstone_bytes_before"], 1),
    )
    w = per_sink[worst]
    print(per_sink, file=sys.stderr)
    write_result(
        "tombstones" + ("_quick" if args.quick else ""),
        figure=f"tombstone bytes reclaimed once the horizon passed ({worst}, the sink that keeps the most)",
        value=w["tombstone_bytes_before"] - w["tombstone_bytes_after"],
        reference=f"{worst} tombstone bytes before (live table: see details)",
        reference_value=max(w["tombstone_bytes_before"], 1),
        target_ratio=0.95,
        details={
            "deletes": deletes,
            "live_keys": live + 1,
            "sinks": per_sink,
            "note": "measured on a shared machine; prune_seconds is indicative",
        },
    )


if __name__ == "__main__":
    main()
