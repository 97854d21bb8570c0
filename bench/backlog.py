"""A large backlog captured as one batch and applied into every sink, each step in a process of its own: peak RSS.

    .venv/bin/python bench/backlog.py [--changes N]      (default 10,000,000; --quick: 300,000)

A PostgreSQL source (the bench's orders shape) gets its slot first, then ``N`` changes (inserts, then 25%
updated, 10% deleted: bench/_pg_workload.py) while nothing captures: the backlog a sink or capture outage
leaves. Then, each in a fresh process (its peak RSS its own): the capture of the whole backlog as **one**
change-log batch, as the sensor plans it, as the least-privilege capture role; and its apply into DuckDB,
ClickHouse and PostgreSQL, each as the sink's own role. Every sink is compared with the source (row count and
checksums of the live rows). The figure is the largest peak RSS of any of these processes; the target is
< 1 GiB (the reference value, 1024 MiB), whatever the backlog. Writes bench/results/backlog.json
(backlog_quick.json with --quick).
"""

from __future__ import annotations

import argparse
import json
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import peak_rss_mb, write_result  # noqa: E402
from bench._pg_workload import ORDERS_DDL, run_orders_workload  # noqa: E402

TABLE = "public.orders"
PIPELINE = "backlog"
DUCKDB_MEMORY_LIMIT = "512MB"  # DuckDB caches what it writes up to its limit (default: 80% of RAM)
CHECK = "SELECT count(*), sum(customer_id), sum(amount), count(DISTINCT status) FROM {}"


def _child(spec: dict) -> None:
    """One step (capture, or the apply into one sink) in this fresh process; prints what it took."""
    from dbmazz_connectors.changelog import ChangeLog
    from dbmazz_connectors.core import create_sink
    from dbmazz_connectors.engine import apply_batch, capture_range
    from dbmazz_connectors.sources.postgres import PostgresSource

    changelog = ChangeLog(spec["changelog"])
    began = time.perf_counter()
    if spec["step"] == "capture":
        source = PostgresSource.from_config({"url": spec["url"], "pipeline": PIPELINE, "tables": [TABLE]})
        source.connect()
        start = source.checkpoint_position()
        manifest = capture_range(source, changelog, PIPELINE, start, source.current_position())
        source.disconnect()
        result = {"batch_id": manifest.batch_id, "changes": manifest.rows, "bytes": manifest.bytes}
    else:
        sink = create_sink(spec["sink"])
        sink.connect()
        applied = apply_batch(changelog, sink, PIPELINE, spec["batch_id"])[TABLE]
        sink.disconnect()
        result = {"rows_written": applied.rows_written, **{k: v for k, v in applied.details.items() if v}}
    result.update(seconds=round(time.perf_counter() - began, 2), peak_rss_mb=round(peak_rss_mb(), 1))
    print(json.dumps(result))


def _step(spec: dict) -> dict:
    # the spec (urls with the throw-away servers' passwords) goes through stdin, not the command line
    out = subprocess.run([sys.executable, __file__, "--child"], input=json.dumps(spec), capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"the {spec['step']} step failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout)
    print(f"{spec['step']}: {result}", file=sys.stderr)
    return result


def _source(pg, changes: int) -> tuple[str, str, int]:
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
        written = run_orders_workload(conn, rows, chunk=200_000)
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


def _sink_check(name: str, config: dict) -> tuple:
    from dbmazz_connectors.core import create_sink

    sink = create_sink(config)
    sink.connect()
    try:
        if name == "clickhouse":
            target = sink.q(sink.target_name(TABLE) + "_current")
            row = sink.client.query(CHECK.format(target)).result_rows[0]
        else:
            state = sink.table_state(TABLE)
            row = sink.fetchall(CHECK.format(sink.target(state)))[0]
        return tuple(str(v) for v in row)
    finally:
        sink.disconnect()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=10_000_000)
    parser.add_argument("--quick", action="store_true", help="a small smoke run (300,000 changes)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(json.loads(sys.stdin.read()))
        return
    from infra.clickhouse import ClickHouseServer
    from infra.postgres import PostgresServer

    changes = 300_000 if args.quick else args.changes
    with PostgresServer() as pg, ClickHouseServer() as ch, tempfile.TemporaryDirectory(prefix="dbmazz-backlog-") as tmp:
        began = time.perf_counter()
        admin_url, role_url, written = _source(pg, changes)
        load_seconds = time.perf_counter() - began
        changelog = f"{tmp}/changelog"
        capture = _step({"step": "capture", "url": role_url, "changelog": changelog})
        sinks = {
            "duckdb": {"url": f"duckdb:///{tmp}/sink.duckdb", "pipeline": PIPELINE, "memory_limit": DUCKDB_MEMORY_LIMIT},
            "clickhouse": {"url": ch.url("backlog"), "pipeline": PIPELINE},
            "postgres": {"url": _pg_sink_role(pg), "pipeline": PIPELINE},
        }
        admin = ch.client()
        admin.command("CREATE DATABASE backlog")  # the sink's database exists (the sink creates tables in it)
        admin.close()
        expected = _source_check(admin_url)
        applies = {}
        for name, config in sinks.items():
            applies[name] = _step({"step": "apply", "sink": config, "changelog": changelog,
                                   "batch_id": capture["batch_id"]})
            applies[name]["equals_source"] = _sink_check(name, config) == expected
            if not applies[name]["equals_source"]:
                raise SystemExit(f"{name} differs from the source: {_sink_check(name, config)} != {expected}")
    peak = max([capture["peak_rss_mb"]] + [a["peak_rss_mb"] for a in applies.values()])
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
            "changes": capture["changes"], "changes_written": written, "load_seconds": round(load_seconds, 1),
            "capture": capture, "apply": applies, "source_check": list(expected),
            "method": "the slot set up first, then the backlog written (orders: inserts, 25% updated, 10% "
                      "deleted); capture of the whole backlog as one batch, then its apply into each sink, each "
                      f"in a fresh process (peak RSS of that process); DuckDB memory_limit {DUCKDB_MEMORY_LIMIT}; "
                      "each sink compared with the source (count and sums of the live rows)",
        },
    )


if __name__ == "__main__":
    main()
