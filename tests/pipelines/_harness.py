"""Helpers for Dagster tests: a shop pipeline on the throw-away PostgreSQL with a DuckDB sink."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import duckdb
import psycopg

from dbmazz_connectors.config import PipelineConfig
from dbmazz_pipelines.definitions import build_definitions
from dbmazz_pipelines.naming import PIPELINE_TAG, batch_partitions, job_name, sensor_name
from infra.shop import SHOP_TABLES, create_replication_role, create_shop, seed_customers


@dataclass
class ShopPipeline:
    config: PipelineConfig
    source_url: str
    duckdb_path: Path

    @property
    def name(self) -> str:
        return self.config.name

    def definitions(self) -> dg.Definitions:
        return build_definitions({self.name: self.config})

    def tick(self, defs: dg.Definitions, instance: dg.DagsterInstance):
        """Evaluate the capture sensor once, applying its partition requests like the daemon does.

        Returns the tick data: ``run_requests`` (empty when skipped) and ``skip_message``."""
        sensor = defs.resolve_sensor_def(sensor_name(self.name))
        # As a context manager: the instance it opens from the ref (and the current-storage context
        # variable that instance sets) is closed with it, not left for a later test to find.
        with dg.build_sensor_context(
            instance_ref=instance.get_ref(), definitions=defs, sensor_name=sensor.name, resources=dict(defs.resources or {})
        ) as context:
            result = sensor.evaluate_tick(context)
        for request in result.dynamic_partitions_requests or []:
            if isinstance(request, dg.AddDynamicPartitionsRequest):
                instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
            else:
                for key in request.partition_keys:
                    instance.delete_dynamic_partition(request.partitions_def_name, key)
        return result

    def run_batch(self, defs: dg.Definitions, instance: dg.DagsterInstance, partition_key: str, raise_on_error=True):
        """Materialize one batch partition: ``changes`` and every sink table, as the batch job does."""
        job = defs.resolve_job_def(job_name(self.name))
        return dg.materialize(
            [a for a in defs.assets if isinstance(a, dg.AssetsDefinition)],
            instance=instance,
            partition_key=partition_key,
            resources=dict(defs.resources or {}),
            selection=dg.AssetSelection.assets(*job.asset_layer.executable_asset_keys),
            tags={PIPELINE_TAG: self.name},
            raise_on_error=raise_on_error,
        )

    def partitions(self, instance: dg.DagsterInstance) -> list[str]:
        return sorted(instance.get_dynamic_partitions(batch_partitions(self.name).name))

    def source_rows(self, table: str) -> list[tuple]:
        with psycopg.connect(self.source_url) as conn:
            return conn.execute(f"SELECT * FROM {table} ORDER BY id").fetchall()

    def sink_rows(self, table: str) -> list[tuple]:
        with psycopg.connect(self.source_url) as conn:
            columns = [r[0] for r in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema || '.' || table_name = %s "
                "ORDER BY ordinal_position", (table,)).fetchall()]
        with duckdb.connect(str(self.duckdb_path), read_only=True) as conn:
            select = ", ".join(f'"{c}"' for c in columns)
            return conn.execute(f"SELECT {select} FROM {table} ORDER BY id").fetchall()


def make_shop_pipeline(pg_db, tmp_path: Path, monkeypatch, name: str = "shop") -> ShopPipeline:
    create_shop(pg_db.url)
    password = secrets.token_hex(8)
    create_replication_role(pg_db.url, f"cap_{pg_db.name}", password, f"dbmazz_{name}", SHOP_TABLES)
    monkeypatch.setenv("TEST_SHOP_PASSWORD", password)
    duckdb_path = tmp_path / "shop.duckdb"
    config = PipelineConfig(
        name=name,
        source={"url": f"postgresql://cap_{pg_db.name}@127.0.0.1:{pg_db.server.port}/{pg_db.name}",
                "password_env": "TEST_SHOP_PASSWORD", "slot": f"dbmazz_{pg_db.name}"},
        tables=SHOP_TABLES,
        sinks={"duckdb": {"url": f"duckdb:///{duckdb_path}", "lock_wait_seconds": 2}},
        changelog=str(tmp_path / "changelog"),
    )
    shop = ShopPipeline(config, pg_db.url, duckdb_path)
    return shop


def start_shop(shop: ShopPipeline, defs: dg.Definitions, instance: dg.DagsterInstance):
    """The first sensor tick sets the source up (slot, publication check); then the shop gets its customers."""
    first = shop.tick(defs, instance)
    seed_customers(shop.source_url)
    return first
