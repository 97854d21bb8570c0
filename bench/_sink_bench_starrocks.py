"""StarRocks sink: how fast it builds Stream Load bodies, next to pyarrow's own CSV writer of the same rows.

    python bench/_sink_bench_starrocks.py [--quick] [--repeat 3]

No StarRocks runs here (the sink's tests use a stand-in server, whose DuckDB-backed apply says nothing about
StarRocks' speed), so this measures the sink's own share of an apply: turning the compacted rows into the JSON
bodies it sends (``_body.groups_of`` + ``json_body``, vectorised pyarrow compute), in rows per second. The
reference is ``pyarrow.csv.write_csv`` of the same columns (data and meta columns) into memory: Arrow's C++ text
writer, the fastest way Arrow offers to turn these rows into text (it has no JSON writer). Writes
``bench/results/sink_apply_starrocks.json`` (``..._quick.json`` with ``--quick``). The machine is shared and
noisy: the best of ``--repeat`` runs counts.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import peak_rss_mb, write_result  # noqa: E402
from bench._sink_bench import ORDERS, orders_workload  # noqa: E402
from dbmazz_connectors.core import compact  # noqa: E402
from dbmazz_connectors.sinks.starrocks._body import groups_of, json_body  # noqa: E402


def _bodies(rows: pa.Table) -> tuple[float, int]:
    began = time.perf_counter()
    size = sum(len(json_body(group, ORDERS)) for group in groups_of(rows, ORDERS, ORDERS.column_names))
    return time.perf_counter() - began, size


def _csv(rows: pa.Table) -> tuple[float, int]:
    table = rows.select([*ORDERS.column_names, "_dbmazz_version", "_dbmazz_commit_ts"])
    began = time.perf_counter()
    sink = pa.BufferOutputStream()
    pacsv.write_csv(table, sink)
    return time.perf_counter() - began, sink.getvalue().size


def _check(rows: pa.Table) -> dict:
    """The bodies parse as JSON and hold every row (not timed)."""
    groups = groups_of(rows, ORDERS, ORDERS.column_names)
    parsed = sum(len(json.loads(json_body(group, ORDERS))) for group in groups)
    if parsed != rows.num_rows:
        raise SystemExit(f"the bodies hold {parsed} rows, expected {rows.num_rows}")
    return {"rows_parsed_back": parsed, "requests": len(groups)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100k inserts instead of 1M")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    changes, _ = orders_workload(100_000 if args.quick else 1_000_000, seed=7)
    rows = compact(changes, ORDERS.primary_key)  # what one rows step of a caught-up backlog holds
    deletes = int(pc.sum(pc.equal(rows.column("_dbmazz_op"), 2)).as_py())
    body_runs = [_bodies(rows) for _ in range(args.repeat)]
    csv_runs = [_csv(rows) for _ in range(args.repeat)]
    body_s, csv_s = min(r[0] for r in body_runs), min(r[0] for r in csv_runs)
    write_result(
        "sink_apply_starrocks" + ("_quick" if args.quick else ""),
        figure="stream_load_body_rows_per_s",
        value=rows.num_rows / body_s,
        reference="pyarrow.csv.write_csv of the same rows and columns into memory (rows/s); best of "
        f"{args.repeat} runs each; measured on a shared 2-core machine",
        reference_value=rows.num_rows / csv_s,
        target_ratio=0.5,
        peak_rss=peak_rss_mb(),
        details={
            "rows": rows.num_rows,
            "tombstones": deletes,
            "quick": args.quick,
            "body_bytes": body_runs[-1][1],
            "csv_bytes": csv_runs[-1][1],
            "body_runs_s": [round(r[0], 3) for r in body_runs],
            "csv_runs_s": [round(r[0], 3) for r in csv_runs],
            "what": "JSON Stream Load bodies of one compacted rows step (tombstones + upserts), no network, "
            "no StarRocks",
            **_check(rows),
        },
    )


if __name__ == "__main__":
    main()
