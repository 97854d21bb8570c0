"""A backfill launched the way the UI launches it (GraphQL ``launchPartitionBackfill``, then the backfill daemon)."""

import logging
import time

import dagster as dg
import pytest
from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.test_utils import InProcessTestWorkspaceLoadTarget, create_run_for_test
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._daemon.backfill import execute_backfill_iteration
from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import QueuedRunCoordinatorDaemon
from dagster_graphql.test.utils import execute_dagster_graphql

from dbmazz_pipelines.assets import MAX_BATCHES_PER_RUN
from dbmazz_pipelines.naming import PIPELINE_TAG, changes_key, pool_name, sink_key

from ._harness import churn, make_shop_pipeline, start_shop

LAUNCH_PARTITION_BACKFILL = """
mutation LaunchPartitionBackfill($backfillParams: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $backfillParams) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message stack }
    ... on PartitionKeysNotFoundError { message }
  }
}
"""

# the code location the test's "webserver" and "daemon" load: the pipeline of the test, from its JSON
DEFS_FILE = """
import os
from dbmazz_connectors.config import PipelineConfig
from dbmazz_pipelines.definitions import build_definitions

with open(os.environ["DBMAZZ_TEST_PIPELINE_JSON"]) as f:
    config = PipelineConfig.model_validate_json(f.read())
defs = build_definitions({config.name: config})
"""

TABLES = ("public.orders", "public.customers")


def _instance_overrides() -> dict:
    """Runs launched synchronously in this process (as the daemon's launcher would launch them elsewhere), and
    the per-pipeline pool limit of 1 a deployment sets (docs/dagster.md, "Backfills")."""
    return {
        "run_launcher": {"module": "dagster._core.launcher.sync_in_memory_run_launcher",
                         "class": "SyncInMemoryRunLauncher"},
        "concurrency": {"pools": {"default_limit": 1}},
    }


def _capture_only(shop, defs, instance, n: int) -> list[str]:
    """``n`` batches captured (the sensor planned each) but applied to no sink, as after a sink outage."""
    keys = []
    for seed in range(n):
        churn(shop.source_url, 100 + seed, n=4)
        request = shop.tick(defs, instance).run_requests[0]
        dg.materialize([a for a in defs.assets if isinstance(a, dg.AssetsDefinition)], instance=instance,
                       partition_key=request.partition_key, resources=dict(defs.resources or {}),
                       selection=[changes_key(shop.name)], tags={PIPELINE_TAG: shop.name})
        keys.append(request.partition_key)
    return keys


def _launch_backfill(process_context, keys: list[str], assets: list[dg.AssetKey]) -> str:
    result = execute_dagster_graphql(
        process_context.create_request_context(), LAUNCH_PARTITION_BACKFILL,
        variables={"backfillParams": {"partitionNames": keys, "fromFailure": False,
                                      "assetSelection": [{"path": key.path} for key in assets]}})
    launched = result.data["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    return launched["backfillId"]


def _run_daemons(process_context, backfill_id: str, timeout: float = 300) -> PartitionBackfill:
    """Iterations of the backfill daemon and of the run queue's daemon until the backfill is done (the queue
    launches runs synchronously, in this process)."""
    instance = process_context.instance
    deadline = time.monotonic() + timeout
    logger = logging.getLogger("test_backfill")
    queue = QueuedRunCoordinatorDaemon(interval_seconds=1)
    while time.monotonic() < deadline:
        errors = [e for e in execute_backfill_iteration(process_context, logger) if e is not None]
        assert not errors, errors[0].to_string()
        list(queue.run_iteration(process_context))
        backfill = instance.get_backfill(backfill_id)
        if backfill.status != BulkActionStatus.REQUESTED:
            return backfill
    runs = [(r.run_id[:8], r.status.value, r.tags.get("dagster/asset_partition_range_start"))
            for r in instance.get_runs(dg.RunsFilter(tags={"dagster/backfill": backfill_id}))]
    raise AssertionError(f"backfill {backfill_id} not done after {timeout} s; its runs: {runs}")


@pytest.fixture
def code_location(tmp_path, monkeypatch):
    def start(shop, instance):
        (tmp_path / "pipeline.json").write_text(shop.config.model_dump_json())
        (tmp_path / "shop_defs.py").write_text(DEFS_FILE)
        monkeypatch.setenv("DBMAZZ_TEST_PIPELINE_JSON", str(tmp_path / "pipeline.json"))
        origin = InProcessCodeLocationOrigin(
            LoadableTargetOrigin(python_file=str(tmp_path / "shop_defs.py"), attribute="defs",
                                 working_directory=str(tmp_path)), location_name="shop_defs")
        return WorkspaceProcessContext(instance, InProcessTestWorkspaceLoadTarget(origin))
    return start


@pytest.mark.parametrize("batches", [6, pytest.param(30, marks=pytest.mark.slow)])
def test_a_ui_backfill_runs_in_a_few_runs_in_order_without_checks(batches, pg_db, tmp_path, monkeypatch,
                                                                 code_location):
    shop = make_shop_pipeline(pg_db, tmp_path, monkeypatch)
    defs = shop.definitions()
    with dg.instance_for_test(overrides=_instance_overrides()) as instance:
        start_shop(shop, defs, instance)
        keys = _capture_only(shop, defs, instance, batches)
        assert shop.sink_rows("public.orders") != shop.source_rows("public.orders")
        sinks = [sink_key(shop.name, "duckdb", table) for table in TABLES]
        began = time.monotonic()
        with code_location(shop, instance) as process_context:
            backfill_id = _launch_backfill(process_context, keys, sinks)
            backfill = _run_daemons(process_context, backfill_id)
        seconds = time.monotonic() - began
        assert backfill.status == BulkActionStatus.COMPLETED_SUCCESS, backfill.status

        runs = instance.get_runs(dg.RunsFilter(tags={"dagster/backfill": backfill_id}))
        assert len(runs) == -(-batches // MAX_BATCHES_PER_RUN) <= 3, f"{len(runs)} runs for {batches} partitions"
        assert all(run.status == dg.DagsterRunStatus.SUCCESS for run in runs)
        for sink in sinks:
            assert set(keys) <= instance.get_materialized_partitions(sink)
        # no check per partition: parity (a source count) never runs in a backfill run; the cheap checks at most
        # once per run
        evaluations = [e for run in runs for e in instance.all_logs(
            run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)]
        names = [e.dagster_event.event_specific_data.check_name for e in evaluations]
        assert "row_count_parity" not in names
        assert len(names) <= len(runs) * len(sinks) * 2
        for table in TABLES:
            assert shop.sink_rows(table) == shop.source_rows(table), table
        print(f"backfill of {batches} batches: {len(runs)} runs, {seconds:.1f} s")

        # live CDC goes on after it, from the same checkpoint
        churn(shop.source_url, 999, n=10)
        assert shop.drive(defs, instance)
        for table in TABLES:
            assert shop.sink_rows(table) == shop.source_rows(table), table


def test_the_pipeline_pool_holds_its_steps_and_live_batches_go_on_during_a_backfill(pg_db, tmp_path, monkeypatch):
    shop = make_shop_pipeline(pg_db, tmp_path, monkeypatch)
    defs = shop.definitions()
    pools = {a.op.pool for a in defs.assets if isinstance(a, dg.AssetsDefinition) and a.is_executable}
    assert pools == {pool_name(shop.name)}, "capture and apply steps of every run share the pipeline's pool"
    with dg.instance_for_test() as instance:
        start_shop(shop, defs, instance)
        churn(shop.source_url, 7, n=5)
        # a backfill run of the pipeline's assets is in flight: it is seen, and the sensor still launches the
        # live batch (the pool takes their steps in turn), so capture does not stall behind the backfill
        create_run_for_test(instance, job_name="__ASSET_JOB", status=dg.DagsterRunStatus.STARTED,
                            tags={"dagster/backfill": "abcdefgh"},
                            asset_selection=frozenset({sink_key(shop.name, "duckdb", "public.orders")}))
        result = shop.tick(defs, instance)
        assert len(result.run_requests) == 1, result.skip_message
