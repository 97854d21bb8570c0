"""A backlog larger than ``max_batch_bytes`` becomes several batch partitions, one planned per tick."""

import dagster as dg
import psycopg

from dbmazz_connectors.changelog import ChangeLog
from dbmazz_connectors.core.positions import position_from_dict

from ._harness import make_shop_pipeline, start_shop

CAP = 32 * 1024  # bytes of WAL per batch; each transaction below writes ~40 KB


def test_a_backlog_is_planned_as_capped_batches_one_per_tick(pg_db, tmp_path, monkeypatch):
    shop = make_shop_pipeline(pg_db, tmp_path, monkeypatch, max_batch_bytes=CAP)
    defs = shop.definitions()
    with dg.instance_for_test() as instance:
        start_shop(shop, defs, instance)
        with psycopg.connect(pg_db.url, autocommit=True) as conn:
            for _ in range(5):
                conn.execute(
                    "INSERT INTO orders (customer_id, quantity, amount, status) "
                    "SELECT g % 100 + 1, g % 7, g * 1.25, 'new' FROM generate_series(1, 400) g"
                )
            conn.execute("UPDATE orders SET status = 'paid' WHERE id % 3 = 0")
        first = shop.tick(defs, instance)
        assert len(first.run_requests) == 1 and first.run_requests[0].tags["dbmazz/kind"] == "cdc"
        blocked = shop.tick(defs, instance)
        assert not blocked.run_requests, (
            "one capped batch at a time: the next is planned once this one is captured"
        )
        shop.run_batch(defs, instance, first.run_requests[0].partition_key)
        launched = shop.drive(defs, instance, limit=60)
        assert all(run.success for run in launched) and {run.kind for run in launched} == {"cdc"}
        batches = [p for p in shop.partitions(instance) if not p.startswith("snap-")]
        assert len(batches) == len(launched) + 1 >= 5, "the backlog became several partitions"
        log = ChangeLog(shop.config.changelog)
        for batch_id in batches:
            start, end = log.plan(shop.name, batch_id)
            assert end.version - start.version <= CAP
            assert batch_id == f"{start.version:020d}-{end.version:020d}", "partition keys stay the range"
        manifests = [log.manifest(shop.name, b) for b in batches]
        assert [m.start for m in manifests[1:]] == [m.end for m in manifests[:-1]]
        assert sum(m.tables["public.orders"].ops.get("insert", 0) for m in manifests) == 2000
        # the last tick found nothing more up to the WAL's end and moved the checkpoint there (idle)
        assert position_from_dict(manifests[-1].end.to_dict()) <= log.checkpoint(shop.name)
        assert shop.sink_rows("public.orders") == shop.source_rows("public.orders")
