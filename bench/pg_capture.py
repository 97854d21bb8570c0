"""PostgreSQL capture throughput vs the server's own decode rate, and peak memory for two backlog sizes.

    .venv/bin/python bench/pg_capture.py [--quick]

Workload (bench/_pg_workload.py): the orders table, insert N rows, update 25%, delete 10%.
For each backlog size a fresh database gets the workload, then a subprocess (for a clean peak
RSS) captures the whole range with ``engine.capture_range`` into a change log in a temporary
folder, slot advance included. For the first size, the server's decode rate is measured in the
same run: ``count(*)`` over ``pg_logical_slot_peek_binary_changes`` on a second slot created at
the same start. Writes bench/results/pg_capture.json.
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
from bench._pg_workload import ORDERS_DDL, run_orders_workload  # noqa: E402

REFERENCE_SLOT = "bench_reference"
CAPTURE_ROLE = "bench_capture"  # the documented least-privilege role (infra.shop.create_replication_role)


def _child(spec: dict) -> None:
    """Capture the range in this (fresh) process; print what it took."""
    from dbmazz_connectors.changelog import ChangeLog
    from dbmazz_connectors.engine import capture_range
    from dbmazz_connectors.sources.postgres import PostgresSource
    from dbmazz_connectors.sources.postgres.position import Lsn

    source = PostgresSource.from_config(
        {"url": spec["url"], "pipeline": "bench", "tables": ["public.orders"], "slot": spec["slot"]}
    )
    source.connect()
    import pyarrow as pa

    pa.array(["warm-up"])  # pyarrow imports pandas lazily on first use: a one-time process cost, not capture
    began = time.perf_counter()
    manifest = capture_range(
        source, ChangeLog(spec["changelog"]), "bench", Lsn.parse(spec["start"]), Lsn.parse(spec["end"])
    )
    seconds = time.perf_counter() - began
    from dbmazz_connectors.sources.postgres._reader import receiver_for

    receiver = receiver_for(source._stream_conn().pgconn)
    source.disconnect()
    print(
        json.dumps(
            {
                "seconds": seconds,
                "ops": manifest.tables["public.orders"].ops,
                "peak_rss_mb": peak_rss_mb(),
                "bytes": manifest.bytes,
                "receiver": receiver,
            }
        )
    )


def _reference(conn, end: str) -> tuple[int, float]:
    began = time.perf_counter()
    count = conn.execute(
        "SELECT count(*) FROM pg_logical_slot_peek_binary_changes(%s, %s::pg_lsn, NULL, 'proto_version', '1', "
        "'publication_names', 'dbmazz_bench')",
        (REFERENCE_SLOT, end),
    ).fetchone()[0]
    return count, time.perf_counter() - began


def _capture_in_child(url: str, slot: str, start, end, receiver: str = "") -> dict:
    with tempfile.TemporaryDirectory(prefix="dbmazz-bench-") as folder:
        spec = {"url": url, "slot": slot, "start": str(start), "end": str(end), "changelog": folder}
        out = subprocess.run(
            [sys.executable, __file__, "--child", json.dumps(spec)],
            check=True,
            capture_output=True,
            text=True,
            env={**os.environ, "DBMAZZ_PG_RECEIVER": receiver},
        )
    return json.loads(out.stdout)


def _one_backlog(pg, rows: int, rounds: int, python_receiver: bool = False) -> dict:
    """Workload, then ``rounds`` interleaved (reference, capture) pairs, each capture on its own slot
    created at the same start; the best of each is kept (the machine is shared and noisy). With
    ``python_receiver``, one more capture uses the pure-Python COPY receiver, for comparison."""
    import psycopg

    from dbmazz_connectors.sources.postgres import PostgresSource
    from infra.shop import create_replication_role

    db = f"bench_{rows}"
    with psycopg.connect(pg.url(), autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {db}")
    result: dict = {"rows_inserted": rows}
    slots = [f"dbmazz_bench_{i}" for i in range(rounds + python_receiver)]
    with psycopg.connect(pg.url(db), autocommit=True) as conn:
        conn.execute(ORDERS_DDL)
        password = secrets.token_hex(12)
        create_replication_role(pg.url(db), CAPTURE_ROLE, password, "dbmazz_bench", ["public.orders"])
        url = pg.url(db, user=CAPTURE_ROLE, password=password)
        source = PostgresSource.from_config(
            {"url": url, "pipeline": "bench", "tables": ["public.orders"], "slot": slots[0]}
        )
        source.connect()
        source.setup()
        for slot in [*slots[1:], REFERENCE_SLOT]:
            conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
        start = source.checkpoint_position()
        began = time.perf_counter()
        result["changes_expected"] = run_orders_workload(conn, rows)
        result["load_seconds"] = round(time.perf_counter() - began, 2)
        end = source.current_position()
        source._flushed_upto(end)
        conn.execute("CHECKPOINT")
        source.disconnect()
        runs = []
        if python_receiver:
            result["python_receiver_seconds"] = round(
                _capture_in_child(url, slots.pop(), start, end, receiver="python")["seconds"], 3
            )
        for slot in slots:
            count, reference_seconds = _reference(conn, str(end))
            capture = _capture_in_child(url, slot, start, end)
            runs.append(
                {
                    "reference_seconds": round(reference_seconds, 3),
                    "capture_seconds": round(capture["seconds"], 3),
                    "peak_rss_mb": round(capture["peak_rss_mb"], 1),
                }
            )
            result.update(capture, reference_count=count)
        result["runs"] = runs
        result["seconds"] = min(r["capture_seconds"] for r in runs)
        result["reference_seconds"] = min(r["reference_seconds"] for r in runs)
        result["peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs)
        result["changes"] = sum(result["ops"].values())
    with psycopg.connect(pg.url(), autocommit=True) as admin:
        admin.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots")
        admin.execute(f"DROP DATABASE {db} WITH (FORCE)")
    print(json.dumps(result), file=sys.stderr)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(json.loads(args.child))
        return
    from infra.postgres import PostgresServer

    sizes = (20_000, 60_000) if args.quick else (1_000_000, 3_000_000)
    with PostgresServer() as pg:
        runs = [
            _one_backlog(pg, rows, rounds=3 if i == 0 else 1, python_receiver=i == 0)
            for i, rows in enumerate(sizes)
        ]
    main_run = runs[0]
    assert main_run["changes"] == main_run["changes_expected"], (
        "captured change count differs from the workload"
    )
    write_result(
        "pg_capture" + ("_quick" if args.quick else ""),
        figure="changes_per_s",
        value=main_run["changes"] / main_run["seconds"],
        reference="server decode rate (count(*) over pg_logical_slot_peek_binary_changes on a second slot)",
        reference_value=main_run["reference_count"] / main_run["reference_seconds"],
        target_ratio=0.5,
        peak_rss=max(r["peak_rss_mb"] for r in runs),
        details={
            "changes": main_run["changes"],
            "seconds": round(main_run["seconds"], 3),
            "reference_seconds": round(main_run["reference_seconds"], 3),
            "method": "best of 3 interleaved (reference, capture) runs, each capture on its own slot created at "
            "the same start, in a fresh process (imports not timed), slot advance included",
            "runs": main_run["runs"],
            "reference_messages": main_run["reference_count"],
            "receiver": main_run["receiver"],
            "python_receiver_seconds": main_run["python_receiver_seconds"],
            "backlogs": [
                {
                    k: r[k]
                    for k in (
                        "rows_inserted",
                        "changes",
                        "seconds",
                        "reference_seconds",
                        "peak_rss_mb",
                        "load_seconds",
                        "bytes",
                    )
                }
                for r in runs
            ],
            "cpus": os.cpu_count(),
        },
    )


if __name__ == "__main__":
    main()
