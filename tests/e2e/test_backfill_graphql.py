"""End to end: under ``dagster dev`` with ``run_mode: stream``, a backfill of 30 partitions of a sink table launched
the way the UI does it (``launchPartitionBackfill`` POSTed to the webserver's /graphql) while the workload writes:
at most 3 runs, no check per partition, live batches keep landing, the sink equals the source afterwards.

The in-process variant (the same GraphQL mutation, the backfill and queue daemons' iterations, a streaming run in
a process of its own) runs in the default suite: tests/pipelines/test_backfill.py."""

from __future__ import annotations

import time
from pathlib import Path

import dagster as dg
import duckdb
import psycopg
import pytest
from dagster._core.execution.backfill import BulkActionStatus

from bench.backfill_freshness import DONE, _launch_backfill, _limit_pool, _oldest_log_partitions
from bench.freshness import _configure, _wait_http, _wait_initial_load
from dbmazz_pipelines.naming import sink_key
from infra._common import free_port
from infra.demo import prepare, start_dagster, stop_process_group
from infra.postgres import PostgresServer
from infra.shop import ShopWorkload

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

COLUMNS = "id, customer_id, quantity, amount, status, note"


def _sink_orders(path: Path) -> list[tuple] | None:
    try:
        with duckdb.connect(str(path), read_only=True) as conn:
            return conn.execute(f"SELECT {COLUMNS} FROM public.orders ORDER BY id").fetchall()
    except (duckdb.IOException, duckdb.CatalogException):
        return None  # a batch is being applied (file locked)


def _source_orders(url: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(f"SELECT {COLUMNS} FROM orders ORDER BY id").fetchall()


def test_a_graphql_backfill_beside_the_streaming_run(tmp_path):
    asset = sink_key("shop", "duckdb", "public.orders")
    with PostgresServer() as pg:
        env = prepare(pg, tmp_path / "demo", orders=500)
        _configure(Path(env["DBMAZZ_PIPELINES"]), "stream", None)
        _limit_pool(env["DAGSTER_HOME"], 1)
        port = free_port()
        proc = start_dagster(env, port, tmp_path / "dagster.log")
        workload = None
        try:
            _wait_http(f"http://127.0.0.1:{port}/server_info", 180)
            _wait_initial_load(env["DAGSTER_HOME"], 300, True)
            workload = ShopWorkload(pg.url("shop"), rate=100, per_transaction=5).start()
            with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
                deadline = time.monotonic() + 180
                while len(_oldest_log_partitions(instance, asset, 30)) < 30:
                    assert time.monotonic() < deadline, "fewer than 30 log batches applied in 3 minutes"
                    time.sleep(2)
                partitions = _oldest_log_partitions(instance, asset, 30)
                launched = time.time()
                backfill_id = _launch_backfill(port, partitions, asset)
                deadline = time.monotonic() + 300
                while instance.get_backfill(backfill_id).status not in DONE:
                    assert time.monotonic() < deadline, "the backfill did not end within 5 minutes"
                    time.sleep(1)
                finished = time.time()
                backfill = instance.get_backfill(backfill_id)
                runs = instance.get_runs(dg.RunsFilter(tags={"dagster/backfill": backfill_id}))
                names = [
                    e.dagster_event.event_specific_data.check_name
                    for run in runs
                    for e in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
                ]
                live = [
                    r
                    for r in instance.fetch_materializations(asset, limit=1000).records
                    if launched < r.timestamp < finished and r.partition_key not in partitions
                ]
            workload.stop()
            deadline = time.monotonic() + 120
            while _sink_orders(Path(env["DBMAZZ_PIPELINES"]).parent / "shop.duckdb") != _source_orders(
                pg.url("shop")
            ):
                assert time.monotonic() < deadline, (
                    "the sink did not catch up with the source within 2 minutes"
                )
                time.sleep(1)
        finally:
            if workload is not None:
                workload.stop()
            stop_process_group(proc)
    assert backfill.status == BulkActionStatus.COMPLETED_SUCCESS, backfill.status
    assert len(runs) <= 3 and all(run.status == dg.DagsterRunStatus.SUCCESS for run in runs), runs
    assert "row_count_parity" not in names and len(names) <= len(runs) * 2, names
    assert live, "no live batch was applied to the sink table while the backfill ran"
