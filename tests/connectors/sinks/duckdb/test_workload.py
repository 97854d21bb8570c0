"""The DuckDB sink's own workload option (the workload itself, replays and snapshots: ../conformance/)."""

from dbmazz_connectors.core import BatchRef, create_sink

from .._workload import assert_sink_equals, mixed_workload


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


def test_a_file_named_like_the_schema_it_holds(tmp_path):
    """A file ``public.duckdb`` is the catalog ``public``: ``public.orders`` would be ambiguous (catalog or schema)
    if the sink did not name its tables by catalog, schema and table."""
    wl = mixed_workload(seed=16)
    sink = create_sink({"url": f"duckdb:///{tmp_path}/public.duckdb", "pipeline": "p"})
    sink.connect()
    for batch in wl.batches:
        sink.write_batch(batch.change_batch(), BatchRef("p", batch.batch_id))
    cols = ", ".join(f'"{c}"' for c in wl.final_schema.column_names)
    assert_sink_equals(sink.fetchall(f'SELECT {cols} FROM "public"."public"."orders"'), wl.expected)
    assert sink.row_count("public.orders") == len(wl.expected)
    sink.disconnect()
