"""The DuckDB sink converges to the source: in order, replayed, and with snapshots interleaved."""

import pytest

from dbmazz_connectors.core import BatchRef, create_sink
from dbmazz_connectors.engine import apply_batch

from .._convergence import applied_twice, replayed_under_new_ids, snapshots_interleaved
from .._workload import assert_sink_equals, mixed_workload, write_batches


@pytest.fixture
def sink(tmp_path):
    sink = create_sink({"url": f"duckdb:///{tmp_path}/sink.duckdb", "pipeline": "p"})
    sink.connect()
    yield sink
    sink.disconnect()


def _rows(sink, schema):
    cols = ", ".join(f'"{c}"' for c in schema.column_names)
    return sink.con.execute(f'SELECT {cols} FROM "public"."orders" ORDER BY 1').fetchall()


def test_mixed_workload_from_the_change_log_equals_the_source(sink, changelog):
    wl = mixed_workload(seed=11)
    for batch_id in write_batches(changelog, "p", wl.batches):
        result = apply_batch(changelog, sink, "p", batch_id)["public.orders"]
        assert not result.already_applied
    assert_sink_equals(_rows(sink, wl.final_schema), wl.expected)
    assert sink.high_water_version("public.orders") == wl.batches[-1].end_version
    assert sink.row_count("public.orders") == len(wl.expected) and sink.row_count("public.nope") == 0


def test_every_batch_applied_twice_gives_the_same_rows(sink, changelog):
    applied_twice(sink, changelog, _rows, seed=12)


def test_replays_under_new_batch_ids_converge_by_version(sink):
    replayed_under_new_ids(sink, _rows, seed=13)


def test_snapshot_batches_interleaved_give_the_same_rows(sink):
    snapshots_interleaved(sink, _rows, seed=14)


def test_schema_option_puts_tables_into_one_schema(tmp_path):
    wl = mixed_workload(seed=15)
    sink = create_sink({"url": f"duckdb:///{tmp_path}/s.duckdb", "schema": "analytics", "pipeline": "p"})
    sink.connect()
    for batch in wl.batches:
        sink.write_batch(batch.change_batch(), BatchRef("p", batch.batch_id))
    cols = ", ".join(f'"{c}"' for c in wl.final_schema.column_names)
    assert_sink_equals(sink.fetchall(f'SELECT {cols} FROM "analytics"."orders"'), wl.expected)
    assert sink.row_count("public.orders") == len(wl.expected)
    sink.disconnect()
