"""The ClickHouse sink converges to the source: in order, replayed, and with snapshots interleaved."""

import pytest

from dbmazz_connectors.core import create_sink
from dbmazz_connectors.engine import apply_batch

from .._convergence import applied_twice, replayed_under_new_ids, snapshots_interleaved
from .._workload import assert_sink_equals, mixed_workload, write_batches


@pytest.fixture
def sink(ch_db):
    sink = create_sink({"url": ch_db.url, "pipeline": "p"})
    sink.connect()
    yield sink
    sink.disconnect()


def current_rows(sink, schema, table="orders"):
    """What a user sees: the ``<table>_current`` view (FINAL, live rows only)."""
    cols = ", ".join(sink.q(c) for c in schema.column_names)
    data = sink.client.query_arrow(f"SELECT {cols} FROM {sink.q(table + '_current')} ORDER BY 1")
    return [tuple(row.values()) for row in data.to_pylist()]


def test_mixed_workload_from_the_change_log_equals_the_source(sink, changelog):
    wl = mixed_workload(seed=11)
    for batch_id in write_batches(changelog, "p", wl.batches):
        result = apply_batch(changelog, sink, "p", batch_id)["public.orders"]
        assert not result.already_applied
    assert_sink_equals(current_rows(sink, wl.final_schema), wl.expected)
    assert sink.high_water_version("public.orders") == wl.batches[-1].end_version
    assert sink.row_count("public.orders") == len(wl.expected)


def test_every_batch_applied_twice_gives_the_same_rows(sink, changelog):
    applied_twice(sink, changelog, current_rows, seed=12)


def test_replays_under_new_batch_ids_converge_by_version(sink):
    replayed_under_new_ids(sink, current_rows, seed=13)


def test_snapshot_batches_interleaved_give_the_same_rows(sink):
    snapshots_interleaved(sink, current_rows, seed=14)
