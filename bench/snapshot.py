"""PostgreSQL snapshot (initial load) throughput vs a raw parallel COPY of the same key ranges; memory at two sizes.

    .venv/bin/python bench/snapshot.py [--quick]

For each table size a fresh database gets N orders (bench/_pg_workload.py's shape, then VACUUM
ANALYZE) and a least-privilege role (LOGIN REPLICATION, SELECT on the table, owner of the
publication). Then, after one uncounted warm-up pair, in interleaved rounds (the machine is shared:
the best of each counts):

- the reference: ``COPY (SELECT * FROM orders WHERE <key range>) TO STDOUT (FORMAT binary)`` of
  every key range of the snapshot's plan, over the same number of parallel connections as the
  snapshot (one psql process each, writing to /dev/null);
- the snapshot, in a fresh process (for a clean peak RSS; imports not timed): ``plan_snapshot``
  and ``run_snapshot`` (every batch captured into a change log in a temporary folder), then, in
  the last round, ``apply_batch`` of every batch into a DuckDB file.

The figure is rows/s of plan + capture into the change log; the ratio is against the reference's
rows/s. Writes bench/results/snapshot.json (snapshot_quick.json with --quick).
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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import peak_rss_mb, write_result  # noqa: E402
from bench._pg_workload import ORDERS_DDL, insert_orders  # noqa: E402

TABLE = "public.orders"
ROLE = "dbmazz_bench_snap"
DUCKDB_MEMORY_LIMIT = "512MB"


def _settings_dict(settings) -> dict:
    return {
        "chunk_rows": settings.chunk_rows,
        "chunks_per_batch": settings.chunks_per_batch,
        "parallelism": settings.parallelism,
    }


def _child(spec: dict) -> None:
    """Plan and capture the snapshot in this (fresh) process, then optionally apply it; print what it took."""
    import pyarrow as pa

    from dbmazz_connectors.changelog import ChangeLog
    from dbmazz_connectors.core import create_sink
    from dbmazz_connectors.engine import apply_batch
    from dbmazz_connectors.snapshots import SnapshotSettings, plan_snapshot, run_snapshot
    from dbmazz_connectors.sources.postgres import PostgresSource
    from dbmazz_connectors.sources.postgres._reader import receiver_for

    pa.array(["warm-up"])  # pyarrow imports pandas lazily on first use: a one-time process cost, not capture
    settings = SnapshotSettings(**spec["settings"])
    changelog = ChangeLog(f"{spec['folder']}/changelog")
    source = PostgresSource.from_config({"url": spec["url"], "pipeline": "bench", "tables": [TABLE]})
    source.connect()
    began = time.perf_counter()
    plan = plan_snapshot(source, changelog, "bench", [TABLE], settings, reason="initial load")
    planned = time.perf_counter()
    manifests = run_snapshot(source, changelog, plan, settings)
    captured = time.perf_counter()
    receiver = receiver_for(source.conn.pgconn)
    source.disconnect()
    result = {
        "plan_seconds": planned - began,
        "capture_seconds": captured - planned,
        "seconds": captured - began,
        "rows": sum(m.tables[TABLE].ops["insert"] for m in manifests),
        "bytes": sum(m.bytes for m in manifests),
        "batches": len(manifests),
        "chunks": sum(len(b) for b in plan.batches),
        "peak_rss_mb": peak_rss_mb(),
        "receiver": receiver,
    }
    if spec["apply"]:
        # DuckDB caches the table it writes up to its memory_limit (default: 80% of RAM), which would grow
        # with the table; the sink's memory_limit option bounds it, as a user bounding a sink process would
        sink = create_sink(
            {
                "url": f"duckdb:///{spec['folder']}/sink.duckdb",
                "pipeline": "bench",
                "memory_limit": DUCKDB_MEMORY_LIMIT,
            }
        )
        sink.connect()
        began = time.perf_counter()
        for manifest in manifests:
            apply_batch(changelog, sink, "bench", manifest.batch_id)
        sink.disconnect()  # DuckDB folds its WAL into the file here: part of the apply's cost
        result["apply_seconds"] = time.perf_counter() - began
        sink.connect()
        result["applied_rows"] = int(sink.fetchall('SELECT count(*) FROM "public"."orders"')[0][0])
        sink.disconnect()
        result["peak_rss_with_apply_mb"] = peak_rss_mb()
    print(json.dumps(result))


def _snapshot_in_child(url: str, settings, apply: bool) -> dict:
    with tempfile.TemporaryDirectory(prefix="dbmazz-bench-") as folder:
        spec = {"url": url, "folder": folder, "settings": _settings_dict(settings), "apply": apply}
        out = subprocess.run(
            [sys.executable, __file__, "--child", json.dumps(spec)],
            check=True,
            capture_output=True,
            text=True,
        )
    return json.loads(out.stdout)


def _reference(url: str, ranges, parallelism: int) -> float:
    """Binary COPY of ``SELECT *`` of every key range into /dev/null by ``parallelism`` psql processes
    (one connection each, ranges dealt round-robin, one REPEATABLE READ transaction). Returns seconds."""
    from urllib.parse import unquote, urlsplit

    import psycopg
    from psycopg import sql

    from dbmazz_connectors.sources.postgres.snapshot import key_predicate
    from infra.postgres import find_bin_dir

    with psycopg.connect(url) as conn:
        copies = [
            sql.SQL("COPY (SELECT * FROM public.orders WHERE {}) TO STDOUT (FORMAT binary);")
            .format(key_predicate(("id",), key_range))
            .as_string(conn)
            for key_range in ranges
        ]
    parts = urlsplit(url)
    env = {
        **os.environ,
        "PGHOST": parts.hostname,
        "PGPORT": str(parts.port),
        "PGUSER": unquote(parts.username),
        "PGPASSWORD": unquote(parts.password),
        "PGDATABASE": parts.path.lstrip("/"),
    }
    scripts = [
        "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;\n"
        + "\n".join(copies[i::parallelism])
        + "\nCOMMIT;\n"
        for i in range(parallelism)
    ]
    psql = [f"{find_bin_dir()}/psql", "-X", "-q", "-v", "ON_ERROR_STOP=1"]
    began = time.perf_counter()
    procs = [
        subprocess.Popen(psql, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env, text=True)
        for _ in scripts
    ]
    for proc, script in zip(procs, scripts, strict=True):
        proc.stdin.write(script)
        proc.stdin.close()
    for proc in procs:
        if proc.wait() != 0:
            raise SystemExit(f"psql failed (exit {proc.returncode}) in the reference COPY")
    return time.perf_counter() - began


def _prepare(pg, db: str, rows: int) -> tuple[str, float]:
    """A database with ``rows`` orders and a least-privilege role set up for capture; returns (role url, load s)."""
    import psycopg

    from dbmazz_connectors.sources.postgres import PostgresSource

    password = secrets.token_hex(8)
    with psycopg.connect(pg.url(), autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {db}")
        if admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (ROLE,)).fetchone() is None:
            admin.execute(f"CREATE ROLE {ROLE} LOGIN REPLICATION")
        admin.execute(f"ALTER ROLE {ROLE} PASSWORD '{password}'")
    began = time.perf_counter()
    with psycopg.connect(pg.url(db), autocommit=True) as conn:
        conn.execute(ORDERS_DDL)
        insert_orders(conn, rows)
        conn.execute(f"GRANT SELECT ON {TABLE} TO {ROLE}")
        conn.execute(f"CREATE PUBLICATION dbmazz_bench FOR TABLE {TABLE}")
        conn.execute(f"ALTER PUBLICATION dbmazz_bench OWNER TO {ROLE}")
        conn.execute("CHECKPOINT")
    load_seconds = time.perf_counter() - began
    url = pg.url(db, user=ROLE, password=password)
    source = PostgresSource.from_config({"url": url, "pipeline": "bench", "tables": [TABLE]})
    source.connect()
    source.setup()  # the pipeline's slot: a snapshot is planned after it, as in production
    source.disconnect()
    return url, load_seconds


def _pair(url: str, ranges, settings, rows: int, apply: bool) -> dict:
    """One reference run, then one snapshot of the same key ranges with the same parallelism."""
    reference_seconds = _reference(url, ranges, settings.parallelism)
    snap = _snapshot_in_child(url, settings, apply=apply)
    if snap["rows"] != rows:
        raise SystemExit(f"the snapshot captured {snap['rows']} rows, the table has {rows}")
    if apply and snap["applied_rows"] != rows:
        raise SystemExit(f"DuckDB holds {snap['applied_rows']} rows after the apply, the table has {rows}")
    run = {
        "parallelism": settings.parallelism,
        "reference_seconds": round(reference_seconds, 3),
        **{k: round(v, 3) if isinstance(v, float) else v for k, v in snap.items()},
    }
    print(json.dumps(run), file=sys.stderr)
    return run


def _one_size(pg, rows: int, rounds: int, settings, other_parallelism: int | None = None) -> dict:
    """Load ``rows`` orders, then ``rounds`` interleaved (reference, snapshot) pairs; the best of each counts.

    With ``other_parallelism``, one more pair at that parallelism (same chunks), for comparison."""
    import dataclasses

    import psycopg

    from dbmazz_connectors.sources.postgres import PostgresSource

    db = f"bench_snap_{rows}"
    url, load_seconds = _prepare(pg, db, rows)
    source = PostgresSource.from_config({"url": url, "pipeline": "bench", "tables": [TABLE]})
    source.connect()
    ranges = source.plan_chunks(
        TABLE, settings.chunk_rows
    )  # what plan_snapshot plans: the table does not change
    source.disconnect()
    # A first pair right after the load is not counted: the freshly loaded, vacuumed and checkpointed
    # table read faster, and the first snapshot slower, than in every later pair (seen at 5M rows).
    warmup = _pair(url, ranges, settings, rows, apply=False)
    # the apply (a large DuckDB file written) in the last run, where its after-effects time nothing
    runs = [_pair(url, ranges, settings, rows, apply=n == rounds - 1) for n in range(rounds)]
    other = None
    if other_parallelism is not None:
        other = _pair(
            url, ranges, dataclasses.replace(settings, parallelism=other_parallelism), rows, apply=False
        )
        other["ratio"] = round(other["reference_seconds"] / other["seconds"], 3)
    with psycopg.connect(pg.url(), autocommit=True) as admin:
        admin.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = %s", (db,)
        )
        admin.execute(f"DROP DATABASE {db} WITH (FORCE)")
    best = min(runs, key=lambda r: r["seconds"])
    reference = min(r["reference_seconds"] for r in runs)
    return {
        "rows": rows,
        "load_seconds": round(load_seconds, 2),
        "chunks": len(ranges),
        "seconds": best["seconds"],
        "plan_seconds": best["plan_seconds"],
        "capture_seconds": best["capture_seconds"],
        "reference_seconds": reference,
        "rows_per_s": round(rows / best["seconds"]),
        "reference_rows_per_s": round(rows / reference),
        "ratio": round(reference / best["seconds"], 3),
        "apply_seconds": runs[-1]["apply_seconds"],
        "apply_rows_per_s": round(rows / runs[-1]["apply_seconds"]),
        "bytes": best["bytes"],
        "batches": best["batches"],
        "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
        "peak_rss_with_apply_mb": runs[-1]["peak_rss_with_apply_mb"],
        "pair_ratios": [round(r["reference_seconds"] / r["seconds"], 3) for r in runs],
        "runs": runs,
        "warmup": warmup,
        **({"other_parallelism": other} if other else {}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(json.loads(args.child))
        return
    from dbmazz_connectors.snapshots import SnapshotSettings
    from infra.postgres import PostgresServer

    settings = SnapshotSettings(chunk_rows=5_000) if args.quick else SnapshotSettings()
    sizes = (20_000, 60_000) if args.quick else (1_000_000, 5_000_000)
    with PostgresServer() as pg:
        small = _one_size(
            pg, sizes[0], 3, settings, other_parallelism=1 if settings.parallelism > 1 else None
        )
        main_run = _one_size(pg, sizes[1], 5, settings)
    write_result(
        "snapshot" + ("_quick" if args.quick else ""),
        figure="rows_per_s",
        value=main_run["rows_per_s"],
        reference="binary COPY of SELECT * of the same key ranges over the same number of connections "
        "(psql processes) into /dev/null (rows/s)",
        reference_value=main_run["reference_rows_per_s"],
        target_ratio=0.6,
        # the larger of capture and apply (DuckDB's memory included), at either size
        peak_rss=max(r[k] for r in (small, main_run) for k in ("peak_rss_mb", "peak_rss_with_apply_mb")),
        details={
            "rows": main_run["rows"],
            "seconds": main_run["seconds"],
            "plan_seconds": main_run["plan_seconds"],
            "capture_seconds": main_run["capture_seconds"],
            "reference_seconds": main_run["reference_seconds"],
            "peak_rss_capture_mb": max(small["peak_rss_mb"], main_run["peak_rss_mb"]),
            "peak_rss_with_apply_mb": max(
                small["peak_rss_with_apply_mb"], main_run["peak_rss_with_apply_mb"]
            ),
            "apply_duckdb_seconds": main_run["apply_seconds"],
            "apply_duckdb_rows_per_s": main_run["apply_rows_per_s"],
            "changelog_bytes": main_run["bytes"],
            "settings": _settings_dict(settings),
            "chunks": main_run["chunks"],
            "batches": main_run["batches"],
            "receiver": main_run["runs"][0]["receiver"],
            "method": "best of 3 (1M rows) and 5 (5M rows) interleaved (reference, snapshot) runs, after one uncounted warm-up pair "
            "(details.warmup); pair_ratios: each run's own reference over its snapshot; the snapshot (plan_snapshot + run_snapshot "
            "into a change log) in a fresh process, imports not timed; the DuckDB apply (apply_batch of "
            "every batch, sweep included, DuckDB sink memory_limit " + DUCKDB_MEMORY_LIMIT + ") measured in "
            "the last run, in the capture's process, its peak RSS (DuckDB's memory included) apart; "
            "peak_rss: the larger of capture and apply; at 1M rows one more pair at parallelism 1 (other_parallelism)",
            "sizes": [{k: v for k, v in r.items() if k not in ("runs", "warmup")} for r in (small, main_run)],
            "runs": main_run["runs"],
            "warmup": main_run["warmup"],
            "cpus": os.cpu_count(),
        },
    )


if __name__ == "__main__":
    main()
