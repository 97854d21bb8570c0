"""The DuckDB sink's check (the database file's folder): made to fail, its printed fix run as printed in a shell,
then the check is ok and the first apply works."""

from __future__ import annotations

import subprocess

from dbmazz_connectors.core import create_sink
from dbmazz_connectors.engine import apply_batch
from tests.connectors.sinks._workload import mixed_workload, write_batches


def test_a_missing_folder_fixed_as_printed_then_apply_works(tmp_path, changelog):
    sink = create_sink({"url": f"duckdb:///{tmp_path}/not yet/there/sink.duckdb", "pipeline": "p"})
    (problem,) = sink.preflight(tables=["public.orders"])
    assert (
        problem.check == "duckdb.open"
        and f"expected the folder {tmp_path}/not yet/there to exist" in problem.message
    )
    subprocess.run(problem.fix, shell=True, check=True)  # as printed: mkdir -p '<folder>'
    assert sink.preflight(tables=["public.orders"]) == []
    workload = mixed_workload(seed=5)
    for batch_id in write_batches(changelog, "p", workload.batches):
        apply_batch(changelog, sink, "p", batch_id)
    assert sink.row_count("public.orders") == len(workload.expected)
    sink.disconnect()
