"""Helpers for Dagster tests: a shop pipeline on the throw-away PostgreSQL with a DuckDB sink."""

from __future__ import annotations

import random
import secrets
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import duckdb
import psycopg

from dbmazz_connectors.config import PipelineConfig
from dbmazz_pipelines.definitions import build_definitions
from dbmazz_pipelines.naming import KIND_TAG, PIPELINE_TAG, batch_partitions, job_name, sensor_name
from infra.shop import SHOP_TABLES, create_replication_role, create_shop, seed_customers


@dataclass(frozen=True)
class Launched:
    """One batch the sensor requested and the harness ran."""

    partition: str
    kind: str
    success: bool


@dataclass
class ShopPipeline:
    """A pipeline driven tick by tick. ``drive`` and ``run_batch`` run one batch run per sensor request, so a
    config that leaves ``run_mode`` to its default (``stream``) runs here with ``run_mode: batch``; a streaming
    pipeline sets ``run_mode: stream`` itself (tests/pipelines/test_stream.py)."""

    config: PipelineConfig
    source_url: str
    duckdb_path: Path
    cursor: str | None = None  # the sensor's cursor, kept between ticks as the daemon does

    def __post_init__(self) -> None:
        if "run_mode" not in self.config.model_fields_set:
            self.config = self.config.model_copy(update={"run_mode": "batch"})

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
            instance_ref=instance.get_ref(),
            definitions=defs,
            sensor_name=sensor.name,
            resources=dict(defs.resources or {}),
            cursor=self.cursor,
        ) as context:
            result = sensor.evaluate_tick(context)
        self.cursor = result.cursor if result.cursor is not None else self.cursor
        for request in result.dynamic_partitions_requests or []:
            if isinstance(request, dg.AddDynamicPartitionsRequest):
                instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
            else:
                for key in request.partition_keys:
                    instance.delete_dynamic_partition(request.partitions_def_name, key)
        return result

    def run_batch(
        self, defs: dg.Definitions, instance: dg.DagsterInstance, partition_key: str, raise_on_error=True
    ):
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

    def drive(
        self,
        defs: dg.Definitions,
        instance: dg.DagsterInstance,
        between: Callable[[], None] | None = None,
        limit: int = 30,
    ) -> list[Launched]:
        """Tick and run what the sensor requests until it requests nothing; ``between`` runs before every tick."""
        launched: list[Launched] = []
        for _ in range(limit):
            if between is not None:
                between()
            requests = self.tick(defs, instance).run_requests
            if not requests:
                return launched
            request = requests[0]
            run = self.run_batch(defs, instance, request.partition_key, raise_on_error=False)
            launched.append(Launched(request.partition_key, request.tags[KIND_TAG], run.success))
        raise AssertionError(f"the sensor still requested runs after {limit}: {launched[-5:]}")

    def partitions(self, instance: dg.DagsterInstance) -> list[str]:
        return sorted(instance.get_dynamic_partitions(batch_partitions(self.name).name))

    def _columns(self, table: str) -> list[tuple[str, str]]:
        with psycopg.connect(self.source_url) as conn:
            return conn.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_schema || '.' || table_name = %s ORDER BY ordinal_position",
                (table,),
            ).fetchall()

    def source_rows(self, table: str) -> list[tuple]:
        """The source's rows by id; JSON as its text, the form a sink keeps."""
        select = ", ".join(
            f'"{c}"::text' if t in ("json", "jsonb") else f'"{c}"' for c, t in self._columns(table)
        )
        with psycopg.connect(self.source_url) as conn:
            return conn.execute(f"SELECT {select} FROM {table} ORDER BY id").fetchall()

    def sink_rows(self, table: str) -> list[tuple]:
        select = ", ".join(f'"{c}"' for c, _ in self._columns(table))
        with duckdb.connect(str(self.duckdb_path), read_only=True) as conn:
            return conn.execute(f"SELECT {select} FROM {table} ORDER BY id").fetchall()


def make_shop_pipeline(pg_db, tmp_path: Path, monkeypatch, name: str = "shop", **config) -> ShopPipeline:
    """The shop tables (empty) and a capture role; ``config`` overrides PipelineConfig fields (e.g. snapshot).
    ``run_mode`` is ``batch`` unless given: the tests drive one batch run per sensor request."""
    config.setdefault("run_mode", "batch")
    create_shop(pg_db.url)
    password = secrets.token_hex(8)
    create_replication_role(pg_db.url, f"cap_{pg_db.name}", password, f"dbmazz_{name}", SHOP_TABLES)
    monkeypatch.setenv("TEST_SHOP_PASSWORD", password)
    duckdb_path = tmp_path / "shop.duckdb"
    config = PipelineConfig(
        name=name,
        source={
            "url": f"postgresql://cap_{pg_db.name}@127.0.0.1:{pg_db.server.port}/{pg_db.name}",
            "password_env": "TEST_SHOP_PASSWORD",
            "slot": f"dbmazz_{pg_db.name}",
        },
        tables=SHOP_TABLES,
        sinks={"duckdb": {"url": f"duckdb:///{duckdb_path}", "lock_wait_seconds": 2}},
        changelog=str(tmp_path / "changelog"),
        **config,
    )
    shop = ShopPipeline(config, pg_db.url, duckdb_path)
    return shop


def start_shop(shop: ShopPipeline, defs: dg.Definitions, instance: dg.DagsterInstance) -> list[Launched]:
    """The shop gets its customers, then the sensor sets the source up and runs their initial load to the end."""
    seed_customers(shop.source_url)
    launched = shop.drive(defs, instance)
    assert launched and all(run.success for run in launched), launched
    return launched


def hold_duckdb_lock(path: Path) -> subprocess.Popen:
    """Another process holding the DuckDB file: applies to it fail (after the sink's short lock wait)."""
    code = f"import duckdb, time; c = duckdb.connect({str(path)!r}); print('locked', flush=True); time.sleep(120)"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def churn(url: str, seed: int, n: int = 40) -> None:
    """``n`` random order inserts, updates and deletes, and customer updates."""
    r = random.Random(seed)
    with psycopg.connect(url, autocommit=True) as conn:
        for _ in range(n):
            roll = r.random()
            if roll < 0.5:
                conn.execute(
                    "INSERT INTO orders (customer_id, quantity, amount, status, note) "
                    "VALUES (%s, %s, %s, 'new', %s)",
                    (r.randint(1, 100), r.randint(1, 9), r.randint(1, 999), str(roll)),
                )
            elif roll < 0.8:
                conn.execute(
                    "UPDATE orders SET status = 'paid', quantity = quantity + 1 "
                    "WHERE id = (SELECT id FROM orders ORDER BY random() LIMIT 1)"
                )
            elif roll < 0.9:
                conn.execute(
                    "DELETE FROM orders WHERE id = (SELECT id FROM orders ORDER BY random() LIMIT 1)"
                )
            else:
                conn.execute(
                    "UPDATE customers SET email = %s WHERE id = %s",
                    (f"x{roll}@example.com", r.randint(1, 100)),
                )
