"""The sink tables' Dagster freshness policy, as Dagster's freshness daemon evaluates it: an idle but current
sink table passes long after its last batch; a sink table stuck on a batch that fails does not pass because an
old batch was re-run. Time is moved past the windows with Dagster's own clock (``freeze_time``)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import threading
import time

import dagster as dg
import pytest
from dagster._core.definitions.freshness import FreshnessState
from dagster._core.loader import LoadingContextForTest
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.test_utils import InProcessTestWorkspaceLoadTarget, freeze_time
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._daemon.freshness import FreshnessDaemon

from dbmazz_pipelines import checks
from dbmazz_pipelines.freshness import CURRENT_AT, RESTATED
from dbmazz_pipelines.metadata import COLUMN_SCHEMA
from dbmazz_pipelines.naming import changes_key, sink_key
from dbmazz_pipelines.operations import OPERATION

from ._harness import churn, hold_duckdb_lock, make_shop_pipeline, start_shop
from .test_operations import _side_write

TABLES = ("public.orders", "public.customers")
WINDOWS = {"freshness_warn_seconds": 60, "freshness_fail_seconds": 120}

DEFS_MODULE = """
import json, os
from dbmazz_connectors.config import PipelineConfig
from dbmazz_pipelines.definitions import build_definitions

config = PipelineConfig.model_validate_json(open({path!r}).read())
defs = build_definitions({{config.name: config}})
"""


def _workspace(shop, instance, tmp_path) -> WorkspaceProcessContext:
    """The pipeline's definitions loaded as a code location, as the daemon sees them."""
    (tmp_path / "pipeline.json").write_text(shop.config.model_dump_json())
    module = tmp_path / "shop_defs.py"
    module.write_text(DEFS_MODULE.format(path=str(tmp_path / "pipeline.json")))
    origin = InProcessCodeLocationOrigin(LoadableTargetOrigin(python_file=str(module), attribute="defs"))
    return WorkspaceProcessContext(instance, InProcessTestWorkspaceLoadTarget(origin))


def _states(workspace: WorkspaceProcessContext, instance, shop) -> dict[str, FreshnessState]:
    """One iteration of Dagster's freshness daemon, then the state it recorded for each sink table."""
    asyncio.run(FreshnessDaemon()._evaluate_assets(workspace))
    keys = [sink_key(shop.name, "duckdb", t) for t in TABLES]
    records = instance.get_freshness_state_records(keys)
    return {k.path[-1]: records[k].freshness_state for k in keys}


def _latest(instance, shop, table: str) -> dg.EventLogEntry:
    return instance.get_latest_materialization_event(sink_key(shop.name, "duckdb", table))


def test_an_idle_current_sink_passes_its_freshness_policy_long_after_its_last_batch(
    pg_db, tmp_path, monkeypatch
):
    shop = make_shop_pipeline(pg_db, tmp_path, monkeypatch, **WINDOWS)
    defs = shop.definitions()
    with dg.instance_for_test() as instance, _workspace(shop, instance, tmp_path) as workspace:
        start_shop(shop, defs, instance)
        churn(pg_db.url, 1)
        assert all(run.success for run in shop.drive(defs, instance))
        applied = {t: _latest(instance, shop, t) for t in TABLES}
        assert _states(workspace, instance, shop) == {t: FreshnessState.PASS for t in TABLES}
        later = time.time() + 200  # past the fail window (120 s), nothing committed at the source
        with freeze_time(later):
            # the latest batch alone is what a time-window policy reads: by itself the idle table would fail
            assert _states(workspace, instance, shop) == {t: FreshnessState.FAIL for t in TABLES}
            result = shop.tick(defs, instance)
            assert not result.run_requests and "idle" in result.skip_message
            assert _states(workspace, instance, shop) == {t: FreshnessState.PASS for t in TABLES}
            for table in TABLES:
                event = _latest(instance, shop, table)
                assert abs(event.timestamp - later) < 0.01  # recorded now: the table was found current now
                recorded = event.asset_materialization
                # the same partition and the table's metadata (the UI's columns panel reads the latest one)
                assert recorded.partition == applied[table].asset_materialization.partition
                assert COLUMN_SCHEMA in recorded.metadata and CURRENT_AT in recorded.metadata
            count = len(
                instance.fetch_materializations(
                    sink_key(shop.name, "duckdb", "public.orders"), limit=100
                ).records
            )
            shop.tick(defs, instance)  # at most once per heartbeat interval (15 s here)
            assert (
                len(
                    instance.fetch_materializations(
                        sink_key(shop.name, "duckdb", "public.orders"), limit=100
                    ).records
                )
                == count
            )
        with freeze_time(later + 100):  # within the warn window of the last record: warn
            assert _states(workspace, instance, shop) == {t: FreshnessState.WARN for t in TABLES}


def _applied_then_stuck(shop, defs, instance, pg_db):
    """Start the shop, apply one batch (``old``), then fail the next (``stuck``: the sink is locked while it runs);
    returns both runs and each table's latest materialization before the failure."""
    start_shop(shop, defs, instance)
    churn(pg_db.url, 1)
    [old] = shop.drive(defs, instance)
    before = {t: _latest(instance, shop, t) for t in TABLES}
    lock = hold_duckdb_lock(shop.duckdb_path)  # the sink is stuck: every apply fails while it is held
    try:
        churn(pg_db.url, 2)
        [stuck] = shop.drive(defs, instance)
        assert not stuck.success
    finally:
        lock.kill()
        lock.wait()
    return old, stuck, before


def test_a_stuck_sink_fails_its_freshness_policy_though_an_old_batch_is_re_run(pg_db, tmp_path, monkeypatch):
    shop = make_shop_pipeline(pg_db, tmp_path, monkeypatch, **WINDOWS)
    defs = shop.definitions()
    with dg.instance_for_test() as instance, _workspace(shop, instance, tmp_path) as workspace:
        old, stuck, before = _applied_then_stuck(shop, defs, instance, pg_db)
        later = time.time() + 200
        with freeze_time(later):
            # a re-run of the old, applied batch succeeds (the sink skips what it holds) ...
            assert shop.run_batch(defs, instance, old.partition).success
            for table in TABLES:
                records = instance.fetch_materializations(
                    dg.AssetRecordsFilter(
                        sink_key(shop.name, "duckdb", table), asset_partitions=[old.partition]
                    ),
                    limit=2,
                ).records
                # ... and is recorded as Dagster records it, then the table's latest update is restated
                stamps = sorted(r.timestamp for r in records)
                assert stamps == pytest.approx(sorted([later, before[table].timestamp]), abs=0.01)
                latest = _latest(instance, shop, table)
                assert (
                    latest.timestamp == pytest.approx(before[table].timestamp, abs=0.01)
                    and RESTATED in latest.asset_materialization.metadata
                )
            shop.tick(defs, instance)  # the source is idle, but the sink did not apply the newest batch
            assert _states(workspace, instance, shop) == {t: FreshnessState.FAIL for t in TABLES}
            # the batch that failed, re-run: the sink is current again
            assert shop.run_batch(defs, instance, stuck.partition).success
            assert _states(workspace, instance, shop) == {t: FreshnessState.PASS for t in TABLES}
        for table in TABLES:
            assert shop.sink_rows(table) == shop.source_rows(table)


def _latest_check(instance, key: dg.AssetKey, name: str, limit: int = 1):
    return instance.event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(key, name), limit=limit
    )


def _shown(instance, record) -> bool:
    """What the UI's check panel shows for the latest materialization (None there reads "Not evaluated")."""
    return asyncio.run(record.targets_latest_materialization(LoadingContextForTest(instance)))


def test_a_streaming_run_keeps_check_results_shown_and_an_idle_table_current(pg_db, tmp_path, monkeypatch):
    from .test_stream import _run_stream, _start, _stream_request

    monkeypatch.setattr(checks, "_parity_wait", lambda pipeline: 2.0)  # no sensor runs during the checks job
    shop = make_shop_pipeline(
        pg_db, tmp_path, monkeypatch, run_mode="stream", stream_interval_seconds=0.2, **WINDOWS
    )
    defs = shop.definitions()
    with dg.instance_for_test() as instance, _workspace(shop, instance, tmp_path) as workspace:
        _start(shop, defs, instance)
        checks_run = defs.resolve_job_def(f"{shop.name}_checks").execute_in_process(instance=instance)
        churn(pg_db.url, 1)
        request = _stream_request(shop, defs, instance)
        writer = threading.Thread(
            target=lambda: [churn(pg_db.url, s, n=10) or time.sleep(0.5) for s in range(2, 8)]
        )
        writer.start()
        result = _run_stream(shop, defs, instance, request, max_seconds=5.0, stop_when_idle=False)
        writer.join()
        assert result.success
        for table in TABLES:
            key = sink_key(shop.name, "duckdb", table)
            latest = instance.get_latest_materialization_event(key)
            assert latest.run_id == result.run_id
            for name in ("freshness", "initial_load"):
                record, earlier = _latest_check(instance, key, name, limit=2)
                # evaluated by the streaming run before its last batches landed, and still shown for them
                assert record.run_id == result.run_id and record.event.timestamp < latest.timestamp
                assert record.evaluation.passed and _shown(instance, record), (table, name)
                # the scheduled checks job's result reads "Not evaluated" once a newer batch lands
                assert earlier.run_id == checks_run.run_id and not _shown(instance, earlier)
            # parity is the checks job's to compare; the streaming run carries its latest outcome, saying so
            record, earlier = _latest_check(instance, key, "row_count_parity", limit=2)
            assert record.run_id == result.run_id and _shown(instance, record)
            assert record.evaluation.metadata["dbmazz/evaluated_in_run"].value == checks_run.run_id
            assert earlier.run_id == checks_run.run_id and not _shown(instance, earlier)
            assert record.evaluation.passed == earlier.evaluation.passed
        later = time.time() + 200
        with freeze_time(later):
            assert _states(workspace, instance, shop) == {t: FreshnessState.FAIL for t in TABLES}
            request = _stream_request(shop, defs, instance)
            _side_write(
                pg_db.url
            )  # a commit of another table: the run acknowledges the source without a batch
            idle = _run_stream(shop, defs, instance, request)
            assert idle.success
            [advance] = [
                r
                for r in instance.fetch_observations(changes_key(shop.name), limit=20).records
                if r.run_id == idle.run_id
            ]
            assert advance.asset_observation.metadata[OPERATION].value == "source advanced"
            # the idle streaming run found every table current: recorded in the run, as the policy reads it
            assert _states(workspace, instance, shop) == {t: FreshnessState.PASS for t in TABLES}
            for table in TABLES:
                key = sink_key(shop.name, "duckdb", table)
                latest = instance.get_latest_materialization_event(key)
                assert latest.run_id == idle.run_id and CURRENT_AT in latest.asset_materialization.metadata
                [record] = _latest_check(instance, key, "freshness")
                assert record.run_id == idle.run_id and record.evaluation.passed and _shown(instance, record)
        for table in TABLES:
            assert shop.sink_rows(table) == shop.source_rows(table)


KILLED_REPLAY = """
import os, signal, sys
import dagster as dg
from dagster._core.instance import InstanceRef
from dagster._core.test_utils import freeze_time
from dbmazz_connectors.config import PipelineConfig
from dbmazz_pipelines import freshness
from dbmazz_pipelines.definitions import build_definitions

def killed(self, *args, **kwargs):  # right after the replay's own materialization, before its restatement
    os.kill(os.getpid(), signal.SIGKILL)

freshness.ReplayGuard.after_apply = killed
config = PipelineConfig.model_validate_json(open(sys.argv[1]).read())
defs = build_definitions({config.name: config})
job = defs.resolve_job_def(config.name + "_batch")
with dg.DagsterInstance.from_ref(InstanceRef.from_dir(sys.argv[2])) as instance, freeze_time(float(sys.argv[4])):
    dg.materialize([a for a in defs.assets if isinstance(a, dg.AssetsDefinition)], instance=instance,
                   partition_key=sys.argv[3], resources=dict(defs.resources or {}), tags={"dbmazz/pipeline": config.name},
                   selection=dg.AssetSelection.assets(*job.asset_layer.executable_asset_keys))
"""


def test_a_re_run_killed_before_its_restatement_is_restated_by_the_next_tick(pg_db, tmp_path, monkeypatch):
    shop = make_shop_pipeline(pg_db, tmp_path, monkeypatch, **WINDOWS)
    defs = shop.definitions()
    with dg.instance_for_test() as instance, _workspace(shop, instance, tmp_path) as workspace:
        old, stuck, before = _applied_then_stuck(shop, defs, instance, pg_db)
        later = time.time() + 200
        (tmp_path / "killed_replay.py").write_text(KILLED_REPLAY)
        args = [str(tmp_path / "pipeline.json"), instance.root_directory, old.partition, str(later)]
        proc = subprocess.run(
            [sys.executable, str(tmp_path / "killed_replay.py"), *args], capture_output=True, text=True
        )
        assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
        [killed] = instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
        first = _latest(instance, shop, TABLES[1])  # customers: its replay recorded, then the process died
        assert abs(first.timestamp - later) < 0.01 and first.run_id == killed.run_id
        with freeze_time(later):
            # the crash window: the replay reads as an update
            assert _states(workspace, instance, shop)["public.customers"] == FreshnessState.PASS
            instance.report_run_failed(killed)  # as run monitoring marks a dead run
            shop.tick(defs, instance)
            restated = _latest(instance, shop, "public.customers")
            assert restated.timestamp == pytest.approx(before["public.customers"].timestamp, abs=0.01)
            assert RESTATED in restated.asset_materialization.metadata
            assert _states(workspace, instance, shop) == {t: FreshnessState.FAIL for t in TABLES}
            # the re-run again, to its end: still no fresher, and the sink holds what it held
            assert shop.run_batch(defs, instance, old.partition).success
            assert _states(workspace, instance, shop) == {t: FreshnessState.FAIL for t in TABLES}
            assert shop.run_batch(defs, instance, stuck.partition).success
            assert _states(workspace, instance, shop) == {t: FreshnessState.PASS for t in TABLES}
        for table in TABLES:
            assert shop.sink_rows(table) == shop.source_rows(table)
