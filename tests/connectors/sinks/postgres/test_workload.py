"""The PostgreSQL sink converges to the source: in order, replayed, and with snapshots interleaved."""

import pytest

from dbmazz_connectors.core import create_sink
from dbmazz_connectors.engine import apply_batch

from .._convergence import applied_twice, replayed_under_new_ids, snapshots_interleaved
from .._workload import assert_sink_equals, mixed_workload, write_batches


@pytest.fixture
def sink(pg_db):
    sink = create_sink({"url": pg_db.sink_url, "pipeline": "p"})
    sink.connect()
    yield sink
    sink.disconnect()


def _rows(sink, schema):
    cols = ", ".join(sink.q(c) for c in schema.column_names)
    return sink.fetchall(f'SELECT {cols} FROM "public"."orders" ORDER BY 1')


def test_mixed_workload_from_the_change_log_equals_the_source(sink, changelog):
    wl = mixed_workload(seed=21)
    for batch_id in write_batches(changelog, "p", wl.batches):
        result = apply_batch(changelog, sink, "p", batch_id)["public.orders"]
        assert not result.already_applied
    assert_sink_equals(_rows(sink, wl.final_schema), wl.expected)
    assert sink.high_water_version("public.orders") == wl.batches[-1].end_version
    assert sink.row_count("public.orders") == len(wl.expected) and sink.row_count("public.nope") == 0


def test_every_batch_applied_twice_gives_the_same_rows(sink, changelog):
    applied_twice(sink, changelog, _rows, seed=22)


def test_replays_under_new_batch_ids_converge_by_version(sink):
    replayed_under_new_ids(sink, _rows, seed=23)


def test_snapshot_batches_interleaved_give_the_same_rows(sink):
    snapshots_interleaved(sink, _rows, seed=24)
