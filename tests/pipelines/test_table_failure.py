"""A table whose apply fails does not stop the other tables of its batch; the failure names the table."""

import dagster as dg
import duckdb

from dbmazz_pipelines.naming import sink_key

from ._harness import churn, make_shop_pipeline, start_shop


def _break_orders(path) -> None:
    """By hand, in the sink: a unique index the source does not have, so inserting a second 'new' order fails."""
    with duckdb.connect(str(path)) as conn:
        conn.execute("CREATE UNIQUE INDEX by_hand ON public.orders (status)")


def _chain(error) -> str:
    """The failure as the UI shows it: the error and its causes."""
    messages = []
    while error is not None:
        messages.append(error.message)
        error = error.cause
    return "\n".join(messages)


def test_one_failing_table_leaves_the_others_applied(pg_db, tmp_path, monkeypatch):
    shop = make_shop_pipeline(pg_db, tmp_path, monkeypatch)
    defs = shop.definitions()
    with dg.instance_for_test() as instance:
        start_shop(shop, defs, instance)
        _break_orders(shop.duckdb_path)
        churn(pg_db.url, 3)
        customers_before = shop.sink_rows("public.customers")
        request = shop.tick(defs, instance).run_requests[0]
        run = shop.run_batch(defs, instance, request.partition_key, raise_on_error=False)
        assert not run.success
        failure = next(e for e in run.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE)
        message = _chain(failure.step_failure_data.error)
        assert "1 of 2 tables failed to apply batch" in message and "public.orders" in message, message
        assert "the other 1 were applied" in message
        # the other table of the batch was applied and materialized, the failing one was not
        assert shop.sink_rows("public.customers") == shop.source_rows("public.customers") != customers_before
        key = request.partition_key
        assert key in instance.get_materialized_partitions(sink_key(shop.name, "duckdb", "public.customers"))
        assert key not in instance.get_materialized_partitions(sink_key(shop.name, "duckdb", "public.orders"))
        # the cause removed, a re-run of the partition converges
        with duckdb.connect(str(shop.duckdb_path)) as conn:
            conn.execute("DROP INDEX public.by_hand")
        assert shop.run_batch(defs, instance, key).success
        assert shop.sink_rows("public.orders") == shop.source_rows("public.orders")
        assert shop.sink_rows("public.customers") == shop.source_rows("public.customers")
