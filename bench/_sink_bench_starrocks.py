"""Bench target for the StarRocks sink, against the stand-in; and how fast the sink builds Stream Load bodies.

    python bench/sink_apply.py --sink starrocks [--quick]     (or: python bench/_sink_bench_starrocks.py [--quick])

No StarRocks runs here. Two measurements, both in ``bench/results/sink_apply_starrocks.json``:

* the headline: the sink's own share of an apply, turning the compacted rows into the JSON bodies it sends
  (``_body.groups_of`` + ``json_body``, vectorised pyarrow compute), in rows per second, next to
  ``pyarrow.csv.write_csv`` of the same columns (data and meta columns) into memory: Arrow's C++ text writer,
  the fastest way Arrow offers to turn these rows into text (it has no JSON writer). No network, no server.
* ``details.steady_state_batches``: the apply of 100k-change batches by the sink through the stand-in
  (``tests/fixtures/starrocks_standin.py``: Stream Load over HTTP with the FE's 307 redirect, the MySQL protocol,
  a DuckDB file behind), next to the raw bulk load of the same final rows through the same stand-in: one Stream
  Load of a CSV body (pyarrow's writer; tab-separated, ``enclose: "``), as a user's bulk load would do, into a table
  the sink's own DDL created. Both pay the stand-in's parsing and storing, so the ratio measures dbmazz's overhead
  (bodies, labels, merge condition, tombstones, state rows) against the same server, not StarRocks' speed.
  Next to it (not the reference): the same rows loaded as one JSON body in the sink's own format
  (``ratio_vs_json_load``), which takes the stand-in's slower parsing of JSON than of CSV out of the ratio.

The machine is shared and noisy: the best of ``--repeat`` runs counts; ``ratio_per_run`` pairs each run's raw
load with its apply (run back to back in one stand-in), ``ratio_median_of_runs`` is their median.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._sink_bench import ORDERS, BenchTarget, orders_workload  # noqa: E402
from dbmazz_connectors.core import TableSchema, compact, create_sink  # noqa: E402
from dbmazz_connectors.sinks.starrocks._body import groups_of, json_body  # noqa: E402

RAW_DATABASE = "bench_raw"


# ---- the raw bulk load: one Stream Load of a CSV body, as a user would send it


def _csv_body(final: pa.Table) -> bytes:
    table = final.append_column("_dbmazz_is_deleted", pa.array([0] * final.num_rows, pa.int8()))
    out = pa.BufferOutputStream()
    pacsv.write_csv(table, out, pacsv.WriteOptions(include_header=False, delimiter="\t"))
    return out.getvalue().to_pybytes()


def _stream_load(standin: Any, database: str, table: str, headers: dict[str, str], body: bytes) -> dict:
    """PUT to the FE, follow its 307 to the BE by hand (``requests`` drops the credentials on a port change)."""
    import requests

    auth = (standin.user, standin.password)
    url = f"http://127.0.0.1:{standin.http_port}/api/{database}/{table}/_stream_load"
    answer = requests.put(
        url, headers={**headers, "Expect": "100-continue"}, auth=auth, allow_redirects=False
    )
    if answer.status_code == 307:
        answer = requests.put(answer.headers["Location"], data=body, headers=headers, auth=auth)
    result = answer.json()
    if result.get("Status") != "Success":
        raise SystemExit(f"the raw Stream Load failed: {result}")
    return result


def _load_rows(
    standin: Any, database: str, final: pa.Table, schema: TableSchema, headers: dict, body
) -> float:
    """Create the sink's table in ``database`` (its own DDL), then time building the body and one Stream Load."""
    raw = create_sink({"url": standin.url(database), "pipeline": "raw"})
    raw.connect()
    raw.create_table(schema)
    raw.disconnect()
    began = time.perf_counter()  # the body is built inside the timing, as the sink's bodies are
    result = _stream_load(
        standin, database, schema.name, {"label": f"raw_{time.time_ns()}", **headers}, body(final)
    )
    seconds = time.perf_counter() - began
    if int(result["NumberLoadedRows"]) != final.num_rows:
        raise SystemExit(f"the raw Stream Load loaded {result['NumberLoadedRows']} of {final.num_rows} rows")
    return seconds


def _json_body(final: pa.Table) -> bytes:
    """The rows as the JSON the sink sends (its own vectorised builder), without merge condition or tombstones."""
    rows = final.append_column("_dbmazz_op", pa.array([0] * final.num_rows, pa.int8()))
    rows = rows.append_column("_dbmazz_unknown_columns", pa.nulls(final.num_rows, pa.list_(pa.string())))
    (group,) = groups_of(rows, ORDERS, ORDERS.column_names)
    return json_body(group, ORDERS)


# seconds of each run's JSON raw load (the CSV one is the reference; this one is reported next to it)
JSON_LOAD_RUNS: list[float] = []


def _raw_load(standin: Any):
    def load(final: pa.Table, schema: TableSchema) -> float:
        columns = ",".join(f"`{c}`" for c in [*final.column_names, "_dbmazz_is_deleted"])
        csv = {  # column_separator: StarRocks' default, a tab (a header may not hold one as such)
            "format": "csv",
            "enclose": '"',
            "columns": columns,
            "max_filter_ratio": "0",
        }
        seconds = _load_rows(standin, RAW_DATABASE, final, schema, csv, _csv_body)
        # the same rows in the sink's own body format, into a database of its own: what is left of the ratio once
        # the stand-in's slower parsing of JSON than of CSV is taken out
        json = {"format": "json", "strip_outer_array": "true", "columns": columns, "max_filter_ratio": "0"}
        JSON_LOAD_RUNS.append(_load_rows(standin, RAW_DATABASE + "_json", final, schema, json, _json_body))
        return seconds

    return load


def _check(sink: Any, schema: TableSchema) -> dict:
    rows, customers = sink.query_rows("SELECT count(*), sum(customer_id) FROM orders_current")[0]
    return {"rows": int(rows), "sum_customer_id": int(customers)}


@contextmanager
def target(workdir: str) -> Iterator[BenchTarget]:
    from tests.fixtures.starrocks_standin import StarRocksStandIn

    with StarRocksStandIn(workdir) as standin:
        yield BenchTarget({"url": standin.url("bench")}, _raw_load(standin), _check)


# ---- the headline: building the Stream Load bodies, next to pyarrow's CSV writer


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


def _parsed_back(rows: pa.Table) -> dict:
    """The bodies parse as JSON and hold every row (not timed)."""
    groups = groups_of(rows, ORDERS, ORDERS.column_names)
    parsed = sum(len(json.loads(json_body(group, ORDERS))) for group in groups)
    if parsed != rows.num_rows:
        raise SystemExit(f"the bodies hold {parsed} rows, expected {rows.num_rows}")
    return {"rows_parsed_back": parsed, "requests": len(groups)}


def headline(quick: bool, repeat: int, steady: dict) -> dict:
    """The ``write_result`` arguments of the body-building figure (``details`` to be completed by the caller);
    adds the JSON raw load to ``steady`` (the steady-state layout's measurements)."""
    if JSON_LOAD_RUNS:
        json_s = min(JSON_LOAD_RUNS)
        steady["raw_json_load_seconds"] = round(json_s, 3)
        steady["raw_json_load_runs"] = [round(x, 3) for x in JSON_LOAD_RUNS]
        steady["ratio_vs_json_load"] = round(steady["changes_per_s"] / (steady["rows"] / json_s), 3)
        steady["ratio_vs_json_load_per_run"] = [  # paired with each run's apply, as ratio_per_run
            round((steady["changes"] / apply_s) / (steady["rows"] / j), 3)
            for (_, apply_s), j in zip(steady["runs"], JSON_LOAD_RUNS[-len(steady["runs"]) :], strict=True)
        ]
    changes, _ = orders_workload(100_000 if quick else 1_000_000, seed=7)
    rows = compact(changes, ORDERS.primary_key)  # what one rows step of a caught-up backlog holds
    deletes = int(pc.sum(pc.equal(rows.column("_dbmazz_op"), 2)).as_py())
    body_runs = [_bodies(rows) for _ in range(repeat)]
    csv_runs = [_csv(rows) for _ in range(repeat)]
    body_s, csv_s = min(r[0] for r in body_runs), min(r[0] for r in csv_runs)
    return {
        "figure": "stream_load_body_rows_per_s",
        "value": rows.num_rows / body_s,
        "reference": "pyarrow.csv.write_csv of the same rows and columns into memory (rows/s); best of "
        f"{repeat} runs each; measured on a shared 2-core machine",
        "reference_value": rows.num_rows / csv_s,
        "details": {
            "rows": rows.num_rows,
            "tombstones": deletes,
            "body_bytes": body_runs[-1][1],
            "csv_bytes": csv_runs[-1][1],
            "body_runs_s": [round(r[0], 3) for r in body_runs],
            "csv_runs_s": [round(r[0], 3) for r in csv_runs],
            "what": "JSON Stream Load bodies of one compacted rows step (tombstones + upserts), no network, "
            "no StarRocks",
            **_parsed_back(rows),
        },
    }


if __name__ == "__main__":
    from bench.sink_apply import main

    main(["--sink", "starrocks", *sys.argv[1:]])
