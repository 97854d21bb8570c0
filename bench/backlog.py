"""A large backlog captured as capped batches and applied into every sink, each step in a process of its own: peak RSS.

    .venv/bin/python bench/backlog.py [--changes N] [--max-batch-bytes B] [--starrocks-changes M]
                                      (default 10,000,000 changes, 256 MiB; --quick: 300,000 changes, 8 MiB)

A PostgreSQL source (the bench's orders shape) gets its slot first, then ``N`` changes (inserts, then 25%
updated, 10% deleted: bench/_pg_workload.py) while nothing captures: the backlog a sink or capture outage
leaves. The backlog is then planned as the sensor plans it, one batch after another, each ending at
``bounded_end(checkpoint, current, max_batch_bytes)`` (the pipeline's cap, cut at transaction boundaries), and
each batch captured in a fresh process as the least-privilege capture role (one process per batch, as the
sensor's batch runs). Then, for each sink (DuckDB, ClickHouse, PostgreSQL, the StarRocks stand-in), one fresh
process applies every batch in order, as the sink's own role: a process that lives through the whole backlog,
as a streaming run does. Every sink is compared with the source (row count and sums of the live rows). The
figure is the largest peak RSS of any capture or apply process; the target is < 1 GiB (the reference value,
1024 MiB), whatever the backlog. The StarRocks stand-in (tests/fixtures/starrocks_standin.py: a Python HTTP
server parsing every Stream Load into DuckDB) runs in a process of its own; it stands for a server, so its RSS
is reported but is not a dbmazz process. ``--starrocks-changes`` applies only the first batches up to that many
changes to it when the stand-in is too slow for the whole backlog (then compared with the folded change log up
to those batches). Writes bench/results/backlog.json (backlog_quick.json with --quick).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import peak_rss_mb, write_result  # noqa: E402
from bench._pg_workload import ORDERS_DDL, run_orders_workload  # noqa: E402

TABLE = "public.orders"
PIPELINE = "backlog"
DUCKDB_MEMORY_LIMIT = "512MB"  # DuckDB caches what it writes up to its limit (default: 80% of RAM)
CHECK = "SELECT count(*), sum(customer_id), sum(amount), count(DISTINCT status) FROM {}"


def _child(spec: dict) -> None:
    """One step (the capture of one planned batch, or the apply of batches into one sink) in this fresh process."""
    from dbmazz_connectors.changelog import ChangeLog
    from dbmazz_connectors.core import create_sink
    from dbmazz_connectors.engine import apply_batch, capture_range
    from dbmazz_connectors.sources.postgres import PostgresSource

    changelog = ChangeLog(spec["changelog"])
    began = time.perf_counter()
    if spec["step"] == "capture":
        source = PostgresSource.from_config({"url": spec["url"], "pipeline": PIPELINE, "tables": [TABLE]})
        source.connect()
        start, end = changelog.plan(PIPELINE, spec["batch_id"])  # the range the planner recorded
        manifest = capture_range(
            source,
            changelog,
            PIPELINE,
            start,
            end,
            batch_id=spec["batch_id"],
            tables=source.table_schemas().values(),
        )  # as the Dagster capture does
        source.disconnect()
        result = {
            "batch_id": manifest.batch_id,
            "changes": manifest.rows,
            "bytes": manifest.bytes,
            "wal_bytes": manifest.end.bytes_since(manifest.start),
        }
    else:
        sink = create_sink(spec["sink"])
        sink.connect()
        batches = []
        for batch_id in spec["batches"]:
            t0 = time.perf_counter()
            applied = apply_batch(changelog, sink, PIPELINE, batch_id)[TABLE]
            batches.append(
                {
                    "batch_id": batch_id,
                    "rows_written": applied.rows_written,
                    "seconds": round(time.perf_counter() - t0, 2),
                    "peak_rss_mb": round(peak_rss_mb(), 1),
                }
            )
        sink.disconnect()
        result = {
            "batches": len(batches),
            "rows_written": sum(b["rows_written"] for b in batches),
            "per_batch": batches,
        }
    result.update(seconds=round(time.perf_counter() - began, 2), peak_rss_mb=round(peak_rss_mb(), 1))
    print(json.dumps(result))


def _standin(directory: str) -> None:
    """The StarRocks stand-in, serving until stdin closes; prints its url (throw-away password) first."""
    from tests.fixtures.starrocks_standin import StarRocksStandIn

    with StarRocksStandIn(directory) as server:
        print(json.dumps({"url": server.url("backlog")}), flush=True)
        sys.stdin.read()
        peak = peak_rss_mb()
    print(json.dumps({"peak_rss_mb": round(peak, 1)}), flush=True)


def _step(spec: dict) -> dict:
    # the spec (urls with the throw-away servers' passwords) goes through stdin, not the command line
    out = subprocess.run(
        [sys.executable, __file__, "--child"], input=json.dumps(spec), capture_output=True, text=True
    )
    if out.returncode != 0:
        raise SystemExit(f"the {spec['step']} step failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout)
    print(f"{spec['step']}: {result}", file=sys.stderr)
    return result


def _source(pg, changes: int, chunk: int) -> tuple[str, str, int]:
    """The orders table, a capture role with its slot set up, then the backlog written: (admin url, role url, changes)."""
    import psycopg

    from dbmazz_connectors.sources.postgres import PostgresSource
    from infra.shop import create_replication_role

    with psycopg.connect(pg.url(), autocommit=True) as admin:
        admin.execute("CREATE DATABASE backlog")
    url = pg.url("backlog")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(ORDERS_DDL)
    password = secrets.token_hex(8)
    create_replication_role(url, "backlog_capture", password, f"dbmazz_{PIPELINE}", [TABLE])
    role_url = pg.url("backlog", user="backlog_capture", password=password)
    source = PostgresSource.from_config({"url": role_url, "pipeline": PIPELINE, "tables": [TABLE]})
    source.connect()
    source.setup()  # the slot exists before the backlog: every change waits in it
    source.disconnect()
    rows = round(changes / 1.35)  # inserts + 25% updates + 10% deletes
    with psycopg.connect(url, autocommit=True) as conn:
        written = run_orders_workload(conn, rows, chunk=chunk)
    return url, role_url, written


def _pg_sink_role(pg) -> str:
    """A database owned by a sink role (CREATE on it is all the sink needs)."""
    import psycopg

    password = secrets.token_hex(8)
    with psycopg.connect(pg.url(), autocommit=True) as admin:
        admin.execute(f"CREATE ROLE backlog_sink LOGIN PASSWORD '{password}'")
        admin.execute("CREATE DATABASE backlog_sink OWNER backlog_sink")
    return pg.url("backlog_sink", user="backlog_sink", password=password)


def _source_check(url: str) -> tuple:
    import psycopg

    with psycopg.connect(url) as conn:
        return tuple(str(v) for v in conn.execute(CHECK.format("public.orders")).fetchone())


def _normal(row) -> list[str]:
    return [format(Decimal(str(v)).normalize(), "f") for v in row]  # 12.50 and 12.5 alike


def _sink_check(name: str, config: dict) -> list[str]:
    from dbmazz_connectors.core import create_sink

    sink = create_sink(config)
    sink.connect()
    try:
        if name == "clickhouse":
            target = sink.q(sink.target_name(TABLE) + "_current")
            row = sink.client.query(CHECK.format(target)).result_rows[0]
        elif name == "starrocks":
            state = sink.table_state(TABLE)
            row = sink.query_rows(CHECK.format(sink.q(state.target + "_current")))[0]
        else:
            state = sink.table_state(TABLE)
            row = sink.fetchall(CHECK.format(sink.target(state)))[0]
        return _normal(row)
    finally:
        sink.disconnect()


def _folded_check(changelog: str, batches: list[str]) -> list[str]:
    """The CHECK figures of the change log folded up to ``batches`` (what a sink given only those must hold)."""
    import pyarrow.compute as pc

    from dbmazz_connectors.changelog import ChangeLog
    from dbmazz_connectors.core.compaction import fold

    log = ChangeLog(changelog)
    state = None
    for batch_id in batches:
        batch = log.read_batch(PIPELINE, batch_id, TABLE)
        for rows in batch.rows():
            state = fold(state, rows.data, batch.schema.primary_key)
    live = state.filter(pc.not_equal(state.column("_dbmazz_op"), 2))
    return _normal(
        [
            live.num_rows,
            pc.sum(live.column("customer_id")).as_py(),
            pc.sum(live.column("amount")).as_py(),
            pc.count_distinct(live.column("status")).as_py(),
        ]
    )


def _plan_and_capture(role_url: str, changelog: str, max_bytes: int) -> list[dict]:
    """Plan the backlog as the sensor does, a capped batch at a time, and capture each in a fresh process."""
    from dbmazz_connectors.changelog import ChangeLog
    from dbmazz_connectors.engine import batch_id_for, bounded_end
    from dbmazz_connectors.sources.postgres import PostgresSource

    source = PostgresSource.from_config({"url": role_url, "pipeline": PIPELINE, "tables": [TABLE]})
    source.connect()
    log = ChangeLog(changelog)
    checkpoint, current = source.checkpoint_position(), source.current_position()
    source.disconnect()
    captures = []
    while checkpoint < current:
        end = bounded_end(checkpoint, current, max_bytes)
        batch_id = batch_id_for(checkpoint, end)
        log.write_plan(PIPELINE, batch_id, checkpoint, end)
        captures.append(
            _step({"step": "capture", "url": role_url, "changelog": changelog, "batch_id": batch_id})
        )
        checkpoint = log.checkpoint(PIPELINE)
    return captures


def _start_standin(directory: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--standin", directory],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    return proc, json.loads(proc.stdout.readline())["url"]


def _stop_standin(proc: subprocess.Popen) -> float | None:
    proc.stdin.close()
    line = proc.stdout.readline()
    proc.wait(timeout=60)
    return json.loads(line)["peak_rss_mb"] if line else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=10_000_000)
    parser.add_argument(
        "--max-batch-bytes", type=int, default=None, help="the cap (default 256 MiB; --quick 8 MiB)"
    )
    parser.add_argument(
        "--starrocks-changes",
        type=int,
        default=None,
        help="apply to the StarRocks stand-in only the first batches up to this many changes",
    )
    parser.add_argument("--sinks", default="duckdb,clickhouse,postgres,starrocks")
    parser.add_argument(
        "--quick", action="store_true", help="a small smoke run (300,000 changes, 8 MiB batches)"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--standin", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(json.loads(sys.stdin.read()))
        return
    if args.standin:
        _standin(args.standin)
        return
    from dbmazz_connectors.engine import DEFAULT_MAX_BATCH_BYTES
    from infra.clickhouse import ClickHouseServer
    from infra.postgres import PostgresServer

    changes = 300_000 if args.quick else args.changes
    max_bytes = args.max_batch_bytes or (8 * 1024 * 1024 if args.quick else DEFAULT_MAX_BATCH_BYTES)
    chunk = 20_000 if args.quick else 200_000  # rows per transaction of the workload
    wanted = args.sinks.split(",")
    with (
        PostgresServer() as pg,
        ClickHouseServer() as ch,
        tempfile.TemporaryDirectory(prefix="dbmazz-backlog-") as tmp,
    ):
        began = time.perf_counter()
        admin_url, role_url, written = _source(pg, changes, chunk)
        load_seconds = time.perf_counter() - began
        changelog = f"{tmp}/changelog"
        began = time.perf_counter()
        captures = _plan_and_capture(role_url, changelog, max_bytes)
        capture_seconds = time.perf_counter() - began
        batches = [c["batch_id"] for c in captures]
        expected = _normal(_source_check(admin_url))
        admin = ch.client()
        admin.command("CREATE DATABASE backlog")  # the sink's database exists (the sink creates tables in it)
        admin.close()
        os.makedirs(f"{tmp}/starrocks")
        standin, standin_url = _start_standin(f"{tmp}/starrocks") if "starrocks" in wanted else (None, "")
        try:
            sinks = {
                "duckdb": {
                    "url": f"duckdb:///{tmp}/sink.duckdb",
                    "pipeline": PIPELINE,
                    "memory_limit": DUCKDB_MEMORY_LIMIT,
                },
                "clickhouse": {"url": ch.url("backlog"), "pipeline": PIPELINE},
                "postgres": {"url": _pg_sink_role(pg), "pipeline": PIPELINE},
                "starrocks": {"url": standin_url, "pipeline": PIPELINE},
            }
            applies = {}
            for name in wanted:
                these, want = batches, expected
                if name == "starrocks" and args.starrocks_changes:
                    upto, total = 0, 0
                    while (
                        upto < len(captures) and total + captures[upto]["changes"] <= args.starrocks_changes
                    ):
                        total += captures[upto]["changes"]
                        upto += 1
                    these = batches[: max(upto, 1)]
                    want = _folded_check(changelog, these) if len(these) < len(batches) else expected
                applies[name] = _step(
                    {"step": "apply", "sink": sinks[name], "changelog": changelog, "batches": these}
                )
                applies[name]["changes"] = sum(c["changes"] for c in captures if c["batch_id"] in these)
                found = _sink_check(name, sinks[name])
                applies[name]["equals_source"] = found == want
                applies[name]["compared_with"] = (
                    "source" if want is expected else "change log folded to its batches"
                )
                if found != want:
                    raise SystemExit(f"{name} differs from the source: {found} != {want}")
        finally:
            standin_rss = _stop_standin(standin) if standin is not None else None
    peak = max([c["peak_rss_mb"] for c in captures] + [a["peak_rss_mb"] for a in applies.values()])
    write_result(
        "backlog" + ("_quick" if args.quick else ""),
        figure="peak_rss_mb_of_any_process",
        value=peak,
        reference="target: 1 GiB (MiB)",
        reference_value=1024,
        target_ratio=1.0,
        higher_is_better=False,
        peak_rss=peak,
        details={
            "changes": sum(c["changes"] for c in captures),
            "changes_written": written,
            "load_seconds": round(load_seconds, 1),
            "max_batch_bytes": max_bytes,
            "batches": len(captures),
            "capture_seconds": round(capture_seconds, 1),
            "capture_peak_rss_mb": max(c["peak_rss_mb"] for c in captures),
            "capture": captures,
            "apply": applies,
            "source_check": expected,
            "starrocks_standin_peak_rss_mb": standin_rss,
            "method": "the slot set up first, then the backlog written (orders: inserts, 25% updated, 10% "
            f"deleted, {chunk} rows a transaction); planned as the sensor plans it, batches ending at "
            f"bounded_end(checkpoint, current, {max_bytes}) (cut at transaction boundaries), each "
            "captured in a fresh process; then per sink one fresh process applying every batch in order "
            f"(peak RSS of each process); DuckDB memory_limit {DUCKDB_MEMORY_LIMIT}; each sink compared "
            "with the source (count and sums of the live rows); the StarRocks stand-in (a Python "
            "server over DuckDB) in a process of its own, not counted in the figure",
        },
    )


if __name__ == "__main__":
    main()
