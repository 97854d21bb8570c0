"""A backfill launched the way the UI launches it (GraphQL ``launchPartitionBackfill``, then the backfill daemon)."""

import logging
import subprocess
import sys
import threading
import time

import dagster as dg
import pytest
import yaml
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
from dbmazz_pipelines.stream import stream_job_name

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
        "run_launcher": {
            "module": "dagster._core.launcher.sync_in_memory_run_launcher",
            "class": "SyncInMemoryRunLauncher",
        },
        "concurrency": {"pools": {"default_limit": 1}},
    }


def _capture_only(shop, defs, instance, n: int) -> list[str]:
    """``n`` batches captured (the sensor planned each) but applied to no sink, as after a sink outage."""
    keys = []
    for seed in range(n):
        churn(shop.source_url, 100 + seed, n=4)
        request = shop.tick(defs, instance).run_requests[0]
        dg.materialize(
            [a for a in defs.assets if isinstance(a, dg.AssetsDefinition)],
            instance=instance,
            partition_key=request.partition_key,
            resources=dict(defs.resources or {}),
            selection=[changes_key(shop.name)],
            tags={PIPELINE_TAG: shop.name},
        )
        keys.append(request.partition_key)
    return keys


def _launch_backfill(process_context, keys: list[str], assets: list[dg.AssetKey]) -> str:
    result = execute_dagster_graphql(
        process_context.create_request_context(),
        LAUNCH_PARTITION_BACKFILL,
        variables={
            "backfillParams": {
                "partitionNames": keys,
                "fromFailure": False,
                "assetSelection": [{"path": key.path} for key in assets],
            }
        },
    )
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
    runs = [
        (r.run_id[:8], r.status.value, r.tags.get("dagster/asset_partition_range_start"))
        for r in instance.get_runs(dg.RunsFilter(tags={"dagster/backfill": backfill_id}))
    ]
    raise AssertionError(f"backfill {backfill_id} not done after {timeout} s; its runs: {runs}")


@pytest.fixture
def code_location(tmp_path, monkeypatch):
    def start(shop, instance):
        (tmp_path / "pipeline.json").write_text(shop.config.model_dump_json())
        (tmp_path / "shop_defs.py").write_text(DEFS_FILE)
        monkeypatch.setenv("DBMAZZ_TEST_PIPELINE_JSON", str(tmp_path / "pipeline.json"))
        origin = InProcessCodeLocationOrigin(
            LoadableTargetOrigin(
                python_file=str(tmp_path / "shop_defs.py"), attribute="defs", working_directory=str(tmp_path)
            ),
            location_name="shop_defs",
        )
        return WorkspaceProcessContext(instance, InProcessTestWorkspaceLoadTarget(origin))

    return start


@pytest.mark.parametrize("batches", [6, pytest.param(30, marks=pytest.mark.slow)])
def test_a_ui_backfill_runs_in_a_few_runs_in_order_without_checks(
    batches, pg_db, tmp_path, monkeypatch, code_location
):
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
        assert len(runs) == -(-batches // MAX_BATCHES_PER_RUN) <= 3, (
            f"{len(runs)} runs for {batches} partitions"
        )
        assert all(run.status == dg.DagsterRunStatus.SUCCESS for run in runs)
        for sink in sinks:
            assert set(keys) <= instance.get_materialized_partitions(sink)
        # no check per partition: parity (a source count) never runs in a backfill run; the cheap checks at most
        # once per run
        evaluations = [
            e
            for run in runs
            for e in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
        ]
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


def test_the_pipeline_pool_holds_its_steps_and_live_batches_go_on_during_a_backfill(
    pg_db, tmp_path, monkeypatch
):
    shop = make_shop_pipeline(pg_db, tmp_path, monkeypatch)
    defs = shop.definitions()
    pools = {a.op.pool for a in defs.assets if isinstance(a, dg.AssetsDefinition) and a.is_executable}
    assert pools == {pool_name(shop.name)}, "capture and apply steps of every run share the pipeline's pool"
    with dg.instance_for_test() as instance:
        start_shop(shop, defs, instance)
        churn(shop.source_url, 7, n=5)
        # a backfill run of the pipeline's assets is in flight: it is seen, and the sensor still launches the
        # live batch (the pool takes their steps in turn), so capture does not stall behind the backfill
        create_run_for_test(
            instance,
            job_name="__ASSET_JOB",
            status=dg.DagsterRunStatus.STARTED,
            tags={"dagster/backfill": "abcdefgh"},
            asset_selection=frozenset({sink_key(shop.name, "duckdb", "public.orders")}),
        )
        result = shop.tick(defs, instance)
        assert len(result.run_requests) == 1, result.skip_message


# A streaming run in a process of its own (as a run worker would run it), on the instance at argv[2]
_STREAM_CHILD = """
import sys
import dagster as dg
from dbmazz_connectors.config import PipelineConfig
from dbmazz_pipelines.definitions import build_definitions
from dbmazz_pipelines.stream import stream_job_name

config = PipelineConfig.model_validate_json(open(sys.argv[1]).read())
defs = build_definitions({config.name: config})
with dg.DagsterInstance.from_config(sys.argv[2]) as instance:
    job = defs.resolve_job_def(stream_job_name(config.name))
    job.execute_in_process(instance=instance, tags={"dbmazz/pipeline": config.name}, raise_on_error=False,
                           run_config={"ops": {config.name + "__stream": {"config": {
                               "max_seconds": 150.0, "stop_when_idle": True}}}})
"""


def _queued_home(tmp_path, run_buffer: int):
    """An instance as docs/dagster.md ("Backfills") sets one up: the run queue, the pipeline pool's limit of 1
    (and the queue's op_granularity_run_buffer); runs the queue launches execute in the launching process."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    pools = {"default_limit": 1, **({"op_granularity_run_buffer": run_buffer} if run_buffer else {})}
    (home / "dagster.yaml").write_text(
        yaml.safe_dump(
            {
                "run_coordinator": {
                    "module": "dagster._core.run_coordinator",
                    "class": "QueuedRunCoordinator",
                },
                "run_launcher": {
                    "module": "dagster._core.launcher.sync_in_memory_run_launcher",
                    "class": "SyncInMemoryRunLauncher",
                },
                "concurrency": {"pools": pools},
                "telemetry": {"enabled": False},
            }
        )
    )
    return home


def _stream_batches(shop, defs, instance, n: int) -> None:
    """At least ``n`` log batches captured and applied by streaming runs (a past range to backfill)."""
    from .test_stream import _writer

    job = defs.resolve_job_def(stream_job_name(shop.name))
    stop = threading.Event()
    writer = _writer(shop.source_url, stop)
    try:
        for _ in range(20):
            if len(_log_partitions(shop, instance)) >= n:
                return
            job.execute_in_process(
                instance=instance,
                tags={PIPELINE_TAG: shop.name},
                run_config={"ops": {f"{shop.name}__stream": {"config": {"max_seconds": 5.0}}}},
            )
        raise AssertionError(f"fewer than {n} log batches: {len(_log_partitions(shop, instance))}")
    finally:
        stop.set()
        writer.join()


def _log_partitions(shop, instance) -> list[str]:
    return [p for p in shop.partitions(instance) if not p.startswith("snap-")]


@pytest.mark.parametrize("run_buffer", [0, pytest.param(1, marks=pytest.mark.slow)])
def test_a_ui_backfill_takes_turns_with_the_streaming_run(
    run_buffer, pg_db, tmp_path, monkeypatch, code_location
):
    """30 partitions of a sink table backfilled the way the UI does it while a streaming run streams: the backfill
    is not starved (the queue holds a run whose pool is full: the streaming run hands its slot over), it takes 2
    runs with no check per partition, the same streaming run applies live batches between its runs, and the sink
    equals the source row by row."""
    from .test_stream import _start, _writer

    shop = make_shop_pipeline(pg_db, tmp_path, monkeypatch, run_mode="stream", stream_interval_seconds=0.2)
    defs = shop.definitions()
    home = _queued_home(tmp_path, run_buffer)
    (tmp_path / "stream.json").write_text(shop.config.model_dump_json())
    orders = sink_key(shop.name, "duckdb", "public.orders")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        _start(shop, defs, instance)
        _stream_batches(shop, defs, instance, 30)
        keys = _log_partitions(shop, instance)[:30]
        stop = threading.Event()
        writer = _writer(shop.source_url, stop)
        child = subprocess.Popen(
            [sys.executable, "-c", _STREAM_CHILD, str(tmp_path / "stream.json"), str(home)]
        )
        try:
            deadline = time.monotonic() + 60
            while not instance.event_log_storage.get_concurrency_info(pool_name(shop.name)).claimed_slots:
                assert child.poll() is None and time.monotonic() < deadline, "the streaming run did not start"
                time.sleep(0.2)
            stream_run = instance.get_runs(dg.RunsFilter(job_name=stream_job_name(shop.name)), limit=1)[0]
            assert stream_run.tags.get("dagster/priority") == "10"
            launched = time.time()
            with code_location(shop, instance) as process_context:
                backfill_id = _launch_backfill(process_context, keys, [orders])
                backfill = _run_daemons(process_context, backfill_id, timeout=240)
            finished = time.time()
        finally:
            stop.set()
            writer.join()
            try:
                child.wait(120)  # idle once the writes stop: it ends (stop_when_idle)
            finally:
                if child.poll() is None:
                    child.kill()
                    child.wait()
        assert backfill.status == BulkActionStatus.COMPLETED_SUCCESS, backfill.status
        runs = instance.get_runs(dg.RunsFilter(tags={"dagster/backfill": backfill_id}))
        assert len(runs) == 2, f"{len(runs)} runs for 30 partitions"
        assert all(run.status == dg.DagsterRunStatus.SUCCESS for run in runs)
        assert set(keys) <= instance.get_materialized_partitions(orders)
        names = [
            e.dagster_event.event_specific_data.check_name
            for run in runs
            for e in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
        ]
        assert "row_count_parity" not in names and len(names) <= len(runs) * 2, names

        # one streaming run throughout: it handed the pool over to each backfill run and took it back, applying
        # live batches in between; it ended only when idle
        streams = instance.get_runs(dg.RunsFilter(job_name=stream_job_name(shop.name)))
        assert streams[0].run_id == stream_run.run_id and streams[0].status == dg.DagsterRunStatus.SUCCESS
        messages = [e.message for e in instance.all_logs(stream_run.run_id) if e.message]
        assert sum("hands the pool" in m for m in messages) >= 2, [m for m in messages if "pool" in m]
        assert sum("took the pool" in m for m in messages) >= 2, [m for m in messages if "pool" in m]
        assert any("stop_when_idle" in m for m in messages), messages[-3:]
        live = [
            e
            for e in instance.all_logs(stream_run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
            if e.dagster_event.asset_key == orders and launched < e.timestamp < finished
        ]
        assert live, "no live batch was applied while the backfill ran"
        for table in TABLES:
            assert shop.sink_rows(table) == shop.source_rows(table), table
        print(
            f"backfill of 30 batches beside a streaming run (run buffer {run_buffer}): {len(runs)} runs, "
            f"{finished - launched:.1f} s, {len(live)} live batches applied meanwhile"
        )


def test_a_streaming_run_sigkilled_while_it_lends_the_pool_is_recovered(
    pg_db, tmp_path, monkeypatch, code_location
):
    """SIGKILL of the streaming run while a backfill run holds the pool it handed over: once the dead run is
    marked failed (run monitoring), its claim is gone, the backfill completes, the next streaming run applies what
    the killed one left and the sink equals the source row by row."""
    from .test_stream import _start, _writer

    shop = make_shop_pipeline(pg_db, tmp_path, monkeypatch, run_mode="stream", stream_interval_seconds=0.2)
    defs = shop.definitions()
    home = _queued_home(tmp_path, 0)
    (tmp_path / "stream.json").write_text(shop.config.model_dump_json())
    orders = sink_key(shop.name, "duckdb", "public.orders")
    pool = pool_name(shop.name)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        _start(shop, defs, instance)
        _stream_batches(shop, defs, instance, 6)
        keys = _log_partitions(shop, instance)[:6]
        stop = threading.Event()
        writer = _writer(shop.source_url, stop)
        child = subprocess.Popen(
            [sys.executable, "-c", _STREAM_CHILD, str(tmp_path / "stream.json"), str(home)]
        )
        killed: list[str] = []

        def kill_while_lent() -> None:
            """SIGKILL the streaming run at its first moment without its slot, then fail it as monitoring does."""
            with dg.DagsterInstance.from_config(str(home)) as watcher:
                deadline = time.monotonic() + 120
                stream_run = None
                while time.monotonic() < deadline and child.poll() is None:
                    slots = watcher.event_log_storage.get_concurrency_info(pool).claimed_slots
                    if stream_run is None and slots:
                        stream_run = slots[0].run_id
                    if stream_run is not None and all(slot.run_id != stream_run for slot in slots):
                        child.kill()
                        child.wait()
                        watcher.report_run_failed(watcher.get_run_by_id(stream_run))
                        killed.append(stream_run)
                        return
                    time.sleep(0.02)

        watcher = threading.Thread(target=kill_while_lent)
        watcher.start()
        try:
            deadline = time.monotonic() + 60
            while not instance.event_log_storage.get_concurrency_info(pool).claimed_slots:
                assert child.poll() is None and time.monotonic() < deadline, "the streaming run did not start"
                time.sleep(0.2)
            with code_location(shop, instance) as process_context:
                backfill_id = _launch_backfill(process_context, keys, [orders])
                backfill = _run_daemons(process_context, backfill_id, timeout=180)
        finally:
            watcher.join()
            stop.set()
            writer.join()
            if child.poll() is None:
                child.kill()
                child.wait()
        assert killed, "the streaming run never handed the pool over"
        assert instance.get_run_by_id(killed[0]).status == dg.DagsterRunStatus.FAILURE
        assert backfill.status == BulkActionStatus.COMPLETED_SUCCESS, backfill.status
        info = instance.event_log_storage.get_concurrency_info(pool)
        leftover = [
            claim for claim in [*info.claimed_slots, *info.pending_steps] if claim.run_id == killed[0]
        ]
        assert not leftover, leftover

        # the next streaming run (the sensor would start it) applies what the killed one captured and left
        job = defs.resolve_job_def(stream_job_name(shop.name))
        result = job.execute_in_process(
            instance=instance,
            tags={PIPELINE_TAG: shop.name},
            run_config={"ops": {f"{shop.name}__stream": {"config": {"stop_when_idle": True}}}},
        )
        assert result.success
        for table in TABLES:
            assert shop.sink_rows(table) == shop.source_rows(table), table
            applied = instance.get_materialized_partitions(sink_key(shop.name, "duckdb", table))
            missing = set(_log_partitions(shop, instance)) - applied
            assert not missing, sorted(missing)[:3]
