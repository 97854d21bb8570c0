"""A StarRocks apply SIGKILLed between a truncate and its inserts, against the stand-in StarRocks (the kill
points every sink shares, including a load committed before the kill: ../conformance/)."""

from dbmazz_connectors.core import create_sink
from dbmazz_connectors.engine import apply_batch

from .._workload import assert_sink_equals, mixed_workload, write_batches
from ..conformance.kit import run_killed
from ._read import current_rows


def test_sigkill_between_truncate_and_its_inserts_converges_on_reapply(sr_db, changelog):
    """No transaction spans a batch: between the truncate's DELETE and the rows after it the table
    looks emptied; re-applying the batch brings it to the source state."""
    wl = mixed_workload(seed=32)
    ids = write_batches(changelog, "p", wl.batches)
    config = {"url": sr_db.url, "pipeline": "p"}
    run_killed(
        config,
        "tests.connectors.sinks.conformance._kill:starrocks_hooks",
        changelog,
        ids,
        ids[3],
        "DELETE FROM",
    )
    sink = create_sink(config)
    sink.connect()
    assert sink.row_count("public.orders") == 0
    for batch_id in ids:
        apply_batch(changelog, sink, "p", batch_id)
    assert_sink_equals(current_rows(sink, wl.final_schema), wl.expected)
    sink.disconnect()
