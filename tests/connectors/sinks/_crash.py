"""The SIGKILL-mid-apply scenario, shared by the DuckDB and PostgreSQL sink tests."""

from __future__ import annotations

import json
import subprocess
import sys

from dbmazz_connectors.core import create_sink
from dbmazz_connectors.engine import apply_batch

from ._workload import assert_sink_equals, mixed_workload, source_rows_after, write_batches

__all__ = ["KILL_POINTS", "kill_and_reapply"]

# (statement the process dies right after, whether the batch is applied at that point)
KILL_POINTS = [
    ("ALTER TABLE", False),
    ('INSERT INTO "public"."orders"', False),
    ('INSERT INTO "_dbmazz"."applied_batches"', False),
    ("COMMIT", True),
]


def _rows(sink, schema):
    cols = ", ".join(sink.q(c) for c in schema.column_names)
    return sink.fetchall(f'SELECT {cols} FROM "public"."orders" ORDER BY 1')


def kill_and_reapply(config: dict, changelog, tmp_path, kill_at: str, applied: bool) -> None:
    """Kill the applier inside batch 4 (which adds a column); the sink must hold the state before it
    (or after it, once committed); re-applying every batch must converge to the source."""
    wl = mixed_workload(seed=31)
    ids = write_batches(changelog, "p", wl.batches)
    spec = {"sink": config, "changelog": changelog.root, "pipeline": "p", "batches": ids, "kill_batch": ids[4],
            "kill_at": kill_at}
    proc = subprocess.run([sys.executable, "-m", "tests.connectors.sinks._kill_apply", json.dumps(spec)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, f"the applier was not killed: {proc.returncode}\n{proc.stderr[-2000:]}"
    sink = create_sink(config)
    sink.connect()
    schema, rows = source_rows_after(wl.batches[: 5 if applied else 4], str(tmp_path / "state"))
    assert_sink_equals(_rows(sink, schema), rows)
    assert ("discount" in sink.table_state("public.orders").schema.column_index) is applied
    results = [apply_batch(changelog, sink, "p", batch_id)["public.orders"] for batch_id in ids]
    assert [r.already_applied for r in results] == [True] * 4 + [applied] + [False]
    assert_sink_equals(_rows(sink, wl.final_schema), wl.expected)
    sink.disconnect()
