"""Operations outside batches show in the UI as observations of ``<pipeline>/changes``: the source's setup, the
initial load's plan, the source acknowledged without a batch (at most one observation a minute) and retention
(batches pruned, tombstones forgotten)."""

from __future__ import annotations

import time

import dagster as dg
import psycopg
from dagster._core.test_utils import freeze_time

from dbmazz_connectors.snapshots import snapshot_of_batch
from dbmazz_pipelines.naming import changes_key
from dbmazz_pipelines.operations import OPERATION

from ._harness import churn, make_shop_pipeline, start_shop


def _observed(instance, pipeline: str) -> list[dict]:
    """The operations observed on the pipeline's changes, oldest first: their metadata and description."""
    records = instance.fetch_observations(changes_key(pipeline), limit=200).records
    out = []
    for record in reversed(records):
        observation = record.asset_observation
        out.append(
            {
                "description": observation.description,
                **{k: getattr(v, "value", v) for k, v in observation.metadata.items()},
            }
        )
    return out


def _side_write(url: str) -> None:
    """A commit in the source that touches none of the pipeline's tables."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS side_notes (id serial PRIMARY KEY, note text)")
        conn.execute("INSERT INTO side_notes (note) VALUES ('x')")


def test_setup_plan_and_idle_advances_are_observed(pg_db, tmp_path, monkeypatch):
    shop = make_shop_pipeline(pg_db, tmp_path, monkeypatch, name="ops")
    defs = shop.definitions()
    with dg.instance_for_test() as instance:
        start_shop(shop, defs, instance)
        observed = _observed(instance, shop.name)
        setup = [o for o in observed if o[OPERATION] == "source set up"]
        assert len(setup) == 1 and "/" in setup[0]["dbmazz/to"], observed
        assert set(setup[0]["tables"]) == {"public.orders", "public.customers"}
        [plan] = [o for o in observed if o[OPERATION] == "snapshot planned"]
        assert plan["reason"] == "initial load" and plan["batches"] >= 2
        earlier = [o for o in observed if o[OPERATION] == "source advanced"]  # the setup's own WAL, maybe

        def advances() -> list[dict]:
            return [o for o in _observed(instance, shop.name) if o[OPERATION] == "source advanced"][
                len(earlier) :
            ]

        began = time.time()
        with freeze_time(began + 61):
            _side_write(pg_db.url)
            result = shop.tick(defs, instance)
            assert not result.run_requests and "acknowledged" in result.skip_message
            [advance] = advances()
            assert advance["advances"] == 1 and advance["dbmazz/from"] != advance["dbmazz/to"]
            if earlier:
                assert advance["dbmazz/from"] == earlier[-1]["dbmazz/to"]
            _side_write(pg_db.url)
            assert "acknowledged" in shop.tick(defs, instance).skip_message
            # the second advance within the minute is not observed on its own ...
            assert len(advances()) == 1
        with freeze_time(began + 122):
            _side_write(pg_db.url)
            assert "acknowledged" in shop.tick(defs, instance).skip_message
        # ... but with the next one, a minute later: from where the last observation ended
        later = advances()
        assert (
            len(later) == 2 and later[1]["advances"] == 2 and later[1]["dbmazz/from"] == advance["dbmazz/to"]
        )


def test_retention_is_observed_with_the_batches_pruned_and_tombstones_forgotten(pg_db, tmp_path, monkeypatch):
    shop = make_shop_pipeline(pg_db, tmp_path, monkeypatch, name="ops_retention", retention_batches=10)
    defs = shop.definitions()
    with dg.instance_for_test() as instance:
        start_shop(shop, defs, instance)
        snapshot = [p for p in shop.partitions(instance) if p.startswith("snap-")]
        for seed in range(12):
            churn(pg_db.url, seed, n=10)
            assert all(run.success for run in shop.drive(defs, instance))
            if any(o[OPERATION] == "retention" for o in _observed(instance, shop.name)):
                break
        [pruned] = [o for o in _observed(instance, shop.name) if o[OPERATION] == "retention"]
        # the initial load's batches are the oldest: they go first, all together
        assert pruned["batches_pruned"] >= len(snapshot) and pruned["retention_batches"] == 10
        assert set(pruned["snapshots_pruned"]) == {snapshot_of_batch(p) for p in snapshot}
        assert not set(snapshot) & set(shop.partitions(instance))
        assert set(pruned["tombstones_forgotten"]) == {"duckdb"} and pruned["tombstone_horizon"] != ""
        assert "left the change log" in pruned["description"]
        for table in ("public.orders", "public.customers"):
            assert shop.sink_rows(table) == shop.source_rows(table)
