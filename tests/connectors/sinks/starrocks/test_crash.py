"""A StarRocks apply SIGKILLed mid-batch (against the stand-in StarRocks): re-applying every batch
converges; loads that committed before the kill are refused by their label and counted as done."""

import json
import subprocess
import sys

import pytest

from dbmazz_connectors.core import create_sink
from dbmazz_connectors.engine import apply_batch

from .._workload import assert_sink_equals, mixed_workload, source_rows_after, write_batches
from ._read import current_rows

# (statement of batch 4 the process dies right after, the state the view shows then (None: part of the
# batch's loads), whether the batch is recorded as applied)
KILL_POINTS = [
    ("ALTER TABLE", "before", False),  # the added column, before any row of the batch
    ("LOAD orders", None, False),  # the first Stream Load of the batch committed, the others not sent
    ("INSERT INTO _dbmazz_applied_batches", "after", True),
]


def _kill(sr_db, changelog, ids, kill_batch, kill_at):
    spec = {
        "sink": {"url": sr_db.url, "pipeline": "p"},
        "changelog": changelog.root,
        "pipeline": "p",
        "batches": ids,
        "kill_batch": kill_batch,
        "kill_at": kill_at,
    }
    proc = subprocess.run(
        [sys.executable, "-m", "tests.connectors.sinks.starrocks._kill_apply", json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -9, f"the applier was not killed: {proc.returncode}\n{proc.stderr[-2000:]}"


@pytest.mark.parametrize("kill_at,state,recorded", KILL_POINTS)
def test_sigkill_mid_batch_then_reapply_converges(sr_db, changelog, tmp_path, kill_at, state, recorded):
    wl = mixed_workload(seed=31)
    ids = write_batches(changelog, "p", wl.batches)
    _kill(sr_db, changelog, ids, ids[4], kill_at)
    sink = create_sink({"url": sr_db.url, "pipeline": "p"})
    sink.connect()
    if state is not None:
        schema, rows = source_rows_after(wl.batches[: 5 if state == "after" else 4], str(tmp_path / "state"))
        assert_sink_equals(current_rows(sink, schema), rows)
    results = [apply_batch(changelog, sink, "p", batch_id)["public.orders"] for batch_id in ids]
    assert [r.already_applied for r in results] == [True] * 4 + [recorded] + [False]
    if state is None:  # the load that committed before the kill is answered "Label Already Exists"
        assert results[4].details["loads_already_done"] == 1 < results[4].details["loads"]
    assert_sink_equals(current_rows(sink, wl.final_schema), wl.expected)
    sink.disconnect()


def test_sigkill_between_truncate_and_its_inserts_converges_on_reapply(sr_db, changelog):
    """No transaction spans a batch: between the truncate's DELETE and the rows after it the table
    looks emptied; re-applying the batch brings it to the source state."""
    wl = mixed_workload(seed=32)
    ids = write_batches(changelog, "p", wl.batches)
    _kill(sr_db, changelog, ids, ids[3], "DELETE FROM")
    sink = create_sink({"url": sr_db.url, "pipeline": "p"})
    sink.connect()
    assert sink.row_count("public.orders") == 0
    for batch_id in ids:
        apply_batch(changelog, sink, "p", batch_id)
    assert_sink_equals(current_rows(sink, wl.final_schema), wl.expected)
    sink.disconnect()
