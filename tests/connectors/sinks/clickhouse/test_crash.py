"""A ClickHouse apply SIGKILLed between a truncate and its inserts (the kill points every sink shares, with the
view showing the state before or after the batch: ../conformance/)."""

from dbmazz_connectors.core import create_sink
from dbmazz_connectors.engine import apply_batch

from .._workload import assert_sink_equals, mixed_workload, write_batches
from ..conformance.kit import run_killed


def _current_rows(sink, schema):
    cols = ", ".join(sink.q(c) for c in schema.column_names)
    data = sink.client.query_arrow(f"SELECT {cols} FROM {sink.q(schema.name + '_current')} ORDER BY 1")
    return [tuple(row.values()) for row in data.to_pylist()]


def test_sigkill_between_truncate_and_its_inserts_converges_on_reapply(ch_db, changelog):
    """No transactions in ClickHouse: between the truncate's DELETE and the rows after it the view
    shows the table emptied; re-applying the batch brings it to the source state."""
    wl = mixed_workload(seed=32)
    ids = write_batches(changelog, "p", wl.batches)
    config = {"url": ch_db.url, "pipeline": "p"}
    run_killed(
        config,
        "tests.connectors.sinks.conformance._kill:clickhouse_hooks",
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
    assert_sink_equals(_current_rows(sink, wl.final_schema), wl.expected)
    sink.disconnect()
