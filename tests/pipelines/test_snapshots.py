"""Initial loads, added tables and re-syncs run through Dagster: the sink ends equal to the source, row by row."""

import dagster as dg
import duckdb
import psycopg
from psycopg import sql

from dbmazz_connectors.changelog import ChangeLog
from dbmazz_connectors.snapshots import plans
from dbmazz_pipelines.naming import changes_key, resync_job_name, sink_key
from infra.shop import SHOP_TABLES, create_shop, seed_customers, seed_orders

from ._harness import ShopPipeline, churn, hold_duckdb_lock, make_shop_pipeline, start_shop

SMALL = {"chunk_rows": 100, "chunks_per_batch": 2}


def _initial_load_checks(shop: ShopPipeline, defs: dg.Definitions, instance) -> dict:
    """The ``initial_load`` check of every sink table, run from the pipeline's checks job."""
    keys = {dg.AssetCheckKey(sink_key(shop.name, "duckdb", t), "initial_load") for t in shop.config.tables}
    job = defs.resolve_job_def(f"{shop.name}_checks").get_subset(asset_check_selection=keys)
    result = job.execute_in_process(instance=instance)
    return {e.asset_key.path[-1]: e for e in result.get_asset_check_evaluations()}


def _churning(url: str, seeds: range):
    """A ``between`` for ``ShopPipeline.drive``: some changes before each of the first ticks."""
    remaining = iter(seeds)

    def between() -> None:
        seed = next(remaining, None)
        if seed is not None:
            churn(url, seed, n=10)

    return between


def _metadata(instance, shop: ShopPipeline, partition: str) -> dict:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(changes_key(shop.name), asset_partitions=[partition]), limit=1
    ).records
    return {k: getattr(v, "value", v) for k, v in records[0].asset_materialization.metadata.items()}


def _seed(url: str, customers: bool = True, orders: int = 0) -> None:
    """The shop's rows before the pipeline exists, with fresh statistics (chunks are planned from estimates)."""
    if customers:
        seed_customers(url)
    if orders:
        seed_orders(url, orders)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ANALYZE customers, orders")


def _batches_of(plan, table: str) -> list[str]:
    ids = plan.batch_ids()
    return [ids[i] for i, chunks in enumerate(plan.batches) if any(c.table == table for c in chunks)]


def _assert_sink_equals_source(shop: ShopPipeline, tables=SHOP_TABLES) -> None:
    for table in tables:
        assert shop.sink_rows(table) == shop.source_rows(table), table


def test_initial_load_takes_turns_with_live_changes_until_sink_equals_source(pg_db, tmp_path, monkeypatch):
    shop = make_shop_pipeline(pg_db, tmp_path, monkeypatch, snapshot=SMALL)
    _seed(pg_db.url, orders=300)  # the shop holds data before the pipeline exists
    defs = shop.definitions()
    with dg.instance_for_test() as instance:
        first = shop.tick(defs, instance)  # sets the source up and plans the initial load
        (plan,) = plans(ChangeLog(shop.config.changelog), shop.name)
        ids = plan.batch_ids()
        assert plan.reason == "initial load" and len(ids) >= 3 and ids[-1].endswith("-sweep"), ids
        assert [r.partition_key for r in first.run_requests] == ids[:1]
        shop.run_batch(defs, instance, ids[0])
        loading = _initial_load_checks(shop, defs, instance)["public.orders"]
        needed = len(_batches_of(plan, "public.orders")) + 1  # and the sweep
        assert not loading.passed and loading.metadata["progress"].value == f"1 of {needed} batches"

        launched = shop.drive(defs, instance, between=_churning(pg_db.url, range(10, 13)))

        # both kinds were pending at every tick with changes: they took turns; the sweep ran last
        assert [r.kind for r in launched][:3] == ["cdc", "snapshot", "cdc"], launched
        assert [r.partition for r in launched if r.kind == "snapshot"] == ids[1:], launched
        assert all(r.success for r in launched)
        _assert_sink_equals_source(shop)
        assert all(check.passed for check in _initial_load_checks(shop, defs, instance).values())
        sweep = _metadata(instance, shop, ids[-1])
        assert sweep["dbmazz/snapshot_batch"] == f"{len(ids)} of {len(ids)}"
        assert sweep["dbmazz/snapshot_reason"] == "initial load"
        assert "dbmazz/to_position" not in sweep  # a snapshot batch is never a checkpoint
        chunks = [_metadata(instance, shop, batch) for batch in ids[:-1]]
        assert sum(m["rows_by_table"].get("public.customers", 0) for m in chunks) == 100
        assert (
            "public.orders" in chunks[0]["chunks"]
            and chunks[0]["dbmazz/snapshot_batch"] == f"1 of {len(ids)}"
        )


def _damage(path) -> None:
    """What a user might do to a sink copy by hand: rows lost, rows altered, rows that never existed."""
    with duckdb.connect(str(path)) as conn:
        conn.execute("DELETE FROM public.orders WHERE id % 7 = 0")
        conn.execute("UPDATE public.orders SET status = 'damaged' WHERE id % 5 = 0")
        conn.execute(
            "INSERT INTO public.orders SELECT * REPLACE (id + 100000 AS id) FROM public.orders WHERE id < 4"
        )
        conn.execute("UPDATE public.customers SET name = 'damaged' WHERE id BETWEEN 10 AND 20")


def _resync(defs, instance, shop: ShopPipeline, config: dict) -> dg.ExecuteInProcessResult:
    job = defs.resolve_job_def(resync_job_name(shop.name))
    return job.execute_in_process(
        instance=instance,
        raise_on_error=False,
        run_config={"ops": {f"{shop.name}_plan_resync": {"config": config}}},
    )


def test_resync_job_repairs_a_damaged_sink_while_changes_continue(pg_db, tmp_path, monkeypatch):
    shop = make_shop_pipeline(pg_db, tmp_path, monkeypatch, snapshot=SMALL)
    _seed(pg_db.url, customers=False, orders=300)
    defs = shop.definitions()
    with dg.instance_for_test() as instance:
        start_shop(shop, defs, instance)
        _damage(shop.duckdb_path)
        assert shop.sink_rows("public.orders") != shop.source_rows("public.orders")

        refused = _resync(defs, instance, shop, {"lower": [10]})  # a key range of every table: ambiguous
        assert not refused.success
        assert "expected one table with a key range" in _failure_message(refused)
        whole = _resync(defs, instance, shop, {"tables": ["public.orders"]})
        assert whole.success
        ranged = _resync(defs, instance, shop, {"tables": ["public.customers"], "lower": [10], "upper": [21]})
        assert ranged.success
        resyncs = {
            p.tables: p for p in plans(ChangeLog(shop.config.changelog), shop.name) if p.reason == "re-sync"
        }
        orders, customers = resyncs[("public.orders",)], resyncs[("public.customers",)]
        output = next(e for e in whole.all_node_events if e.is_successful_output).step_output_data.metadata
        assert output["batches"].value == len(orders.batch_ids()) and output["sweep"].value is True
        assert not customers.sweep, "a key-range re-sync has no sweep"

        launched = shop.drive(defs, instance, between=_churning(pg_db.url, range(20, 23)))

        resynced = {r.partition for r in launched if r.kind == "snapshot"}
        assert resynced == {*orders.batch_ids(), *customers.batch_ids()} and all(
            r.success for r in launched
        ), launched
        assert any(r.kind == "cdc" for r in launched)
        _assert_sink_equals_source(shop)


def _add_notes_table(pg_db) -> None:
    """A new table, given to the capture role and its publication as the preflight's hint says."""
    with pg_db.connect() as conn:
        conn.execute("CREATE TABLE notes (id int PRIMARY KEY, body text NOT NULL)")
        conn.execute("INSERT INTO notes SELECT g, 'note ' || g FROM generate_series(1, 150) g")
        role = sql.Identifier(f"cap_{pg_db.name}")
        conn.execute(sql.SQL("GRANT SELECT ON notes TO {}").format(role))
        conn.execute("ALTER PUBLICATION dbmazz_shop ADD TABLE notes")


def test_a_table_added_to_the_configuration_is_loaded(pg_db, tmp_path, monkeypatch):
    shop = make_shop_pipeline(pg_db, tmp_path, monkeypatch, snapshot=SMALL)
    with dg.instance_for_test() as instance:
        start_shop(shop, shop.definitions(), instance)
        _add_notes_table(pg_db)
        config = shop.config.model_copy(update={"tables": [*SHOP_TABLES, "public.notes"]})
        grown = ShopPipeline(config, shop.source_url, shop.duckdb_path, cursor=shop.cursor)
        defs = grown.definitions()
        before = _initial_load_checks(grown, defs, instance)
        assert not before["public.notes"].passed and before["public.orders"].passed

        edits = iter(
            [
                "UPDATE notes SET body = body || ' edited' WHERE id % 10 = 0",
                "DELETE FROM notes WHERE id > 140",
            ]
        )

        def edit_notes() -> None:  # changes to the new table while it loads
            statement = next(edits, None)
            if statement is not None:
                with psycopg.connect(pg_db.url, autocommit=True) as conn:
                    conn.execute(statement)

        launched = grown.drive(defs, instance, between=edit_notes)

        (added,) = [p for p in plans(ChangeLog(config.changelog), shop.name) if p.reason == "table added"]
        assert added.tables == ("public.notes",)
        assert {r.partition for r in launched if r.kind == "snapshot"} == set(added.batch_ids())
        _assert_sink_equals_source(grown, [*SHOP_TABLES, "public.notes"])
        assert all(check.passed for check in _initial_load_checks(grown, defs, instance).values())


def _grant(pg_db, verb: str) -> None:
    role = sql.Identifier(f"cap_{pg_db.name}")
    statement = "GRANT SELECT ON orders TO {}" if verb == "grant" else "REVOKE SELECT ON orders FROM {}"
    with pg_db.connect() as conn:
        conn.execute(sql.SQL(statement).format(role))


def test_failed_snapshot_batches_block_nothing_and_a_rerun_converges(pg_db, tmp_path, monkeypatch):
    shop = make_shop_pipeline(
        pg_db, tmp_path, monkeypatch, snapshot={"chunk_rows": 100, "chunks_per_batch": 1}
    )
    _seed(pg_db.url, orders=150)
    defs = shop.definitions()
    changelog = ChangeLog(shop.config.changelog)
    with dg.instance_for_test() as instance:
        shop.tick(
            defs, instance
        )  # plans the initial load: customers, orders in two or more batches, the sweep
        (plan,) = plans(changelog, shop.name)
        customers, orders, sweep = (
            _batches_of(plan, "public.customers"),
            _batches_of(plan, "public.orders"),
            plan.batch_ids()[-1],
        )
        assert len(orders) >= 2 and not set(customers) & set(orders), plan.batch_ids()
        orders_1 = orders[0]
        _grant(pg_db, "revoke")  # reading the orders chunks now fails
        launched = shop.drive(defs, instance, between=_churning(pg_db.url, range(30, 33)))
        assert {r.partition for r in launched if not r.success} == set(orders), launched
        assert {r.partition for r in launched if r.success and r.kind == "snapshot"} == set(customers)
        assert sum(r.kind == "cdc" and r.success for r in launched) >= 2, "live changes went on meanwhile"
        waiting = shop.tick(defs, instance)
        assert (
            not waiting.run_requests and orders_1 in waiting.skip_message and "re-run" in waiting.skip_message
        )

        _grant(pg_db, "grant")
        blocker = hold_duckdb_lock(shop.duckdb_path)  # the re-run captures, then cannot apply
        try:
            assert not shop.run_batch(defs, instance, orders_1, raise_on_error=False).success
        finally:
            blocker.kill()
            blocker.wait()
        staged = changelog.manifest(shop.name, orders_1)
        assert staged is not None
        assert shop.run_batch(defs, instance, orders_1).success
        assert changelog.manifest(shop.name, orders_1).created_at == staged.created_at, (
            "a complete batch is not read again"
        )
        for batch in orders[1:]:
            assert shop.run_batch(defs, instance, batch).success
        assert [r.partition for r in shop.drive(defs, instance)] == [sweep]
        _assert_sink_equals_source(shop)


def _failure_message(run) -> str:
    """The failed step's error as the UI shows it: the message and its causes."""
    error, messages = run.get_step_failure_events()[0].event_specific_data.error, []
    while error is not None:
        messages.append(error.message)
        error = error.cause
    return "\n".join(messages)


def test_a_recreated_table_fails_with_the_resync_fix_and_the_resync_recovers(pg_db, tmp_path, monkeypatch):
    shop = make_shop_pipeline(pg_db, tmp_path, monkeypatch, snapshot=SMALL)
    seed_orders(pg_db.url, 100)
    defs = shop.definitions()
    with dg.instance_for_test() as instance:
        start_shop(shop, defs, instance)
        with pg_db.connect() as conn:  # dropped and re-created (as pgbench -i does), with other rows
            conn.execute("DROP TABLE customers")
        create_shop(pg_db.url)
        with pg_db.connect() as conn:
            conn.execute("INSERT INTO customers (name) SELECT 'new ' || g FROM generate_series(1, 30) g")
            conn.execute(
                sql.SQL("GRANT SELECT ON customers TO {}").format(sql.Identifier(f"cap_{pg_db.name}"))
            )
        churn(pg_db.url, 40, n=5)
        (request,) = shop.tick(defs, instance).run_requests
        failed = shop.run_batch(defs, instance, request.partition_key, raise_on_error=False)
        assert not failed.success
        message = _failure_message(failed)
        assert "public.customers" in message and "re-created" in message and "shop_resync" in message, message

        with pg_db.connect() as conn:  # what `dbmazz check` prints: the new table back into the publication
            conn.execute("ALTER PUBLICATION dbmazz_shop ADD TABLE customers")
        assert _resync(defs, instance, shop, {"tables": ["public.customers"]}).success
        assert shop.run_batch(defs, instance, request.partition_key).success  # the failed batch, re-run
        launched = shop.drive(defs, instance, between=_churning(pg_db.url, range(41, 43)))
        assert all(r.success for r in launched) and any(r.kind == "snapshot" for r in launched), launched
        _assert_sink_equals_source(shop)


def test_resync_after_a_lost_log_restarts_capture_and_reloads_every_table(pg_db, tmp_path, monkeypatch):
    shop = make_shop_pipeline(pg_db, tmp_path, monkeypatch, snapshot=SMALL)
    defs = shop.definitions()
    with dg.instance_for_test() as instance:
        start_shop(shop, defs, instance)
        churn(pg_db.url, 50, n=10)
        (request,) = shop.tick(defs, instance).run_requests  # planned; then the slot is lost before it runs
        with pg_db.connect() as conn:
            conn.execute("SELECT pg_drop_replication_slot(%s)", (shop.config.source["slot"],))
        assert not shop.run_batch(defs, instance, request.partition_key, raise_on_error=False).success
        churn(pg_db.url, 51, n=10)  # changes no slot records

        assert _resync(defs, instance, shop, {"after_lost_log": True}).success
        launched = shop.drive(defs, instance, between=_churning(pg_db.url, range(52, 54)))

        assert request.partition_key not in shop.partitions(instance), "the lost range's batch is gone"
        assert all(r.success for r in launched) and {r.kind for r in launched} == {"cdc", "snapshot"}, (
            launched
        )
        _assert_sink_equals_source(shop)
