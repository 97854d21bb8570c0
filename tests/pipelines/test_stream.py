"""``run_mode: stream``: one long-lived run captures and applies a batch every interval, each batch a partition
with the batch job's metadata; a SIGKILLed streaming run is recovered by the next without losing or doubling rows."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import psycopg

from dbmazz_pipelines.naming import KIND_TAG, changes_key, sink_key
from dbmazz_pipelines.stream import stream_job_name
from infra.shop import seed_customers

from ._harness import churn, make_shop_pipeline

TABLES = ("public.orders", "public.customers")
STREAM = {"run_mode": "stream", "stream_interval_seconds": 0.2}


def test_stream_is_the_default_run_mode_of_pipelines_yaml_and_the_component(tmp_path):
    """A pipeline that says nothing of run_mode gets the streaming job, which its capture sensor launches."""
    from dbmazz_connectors.config import PipelineConfig
    from dbmazz_pipelines import DbmazzPipelineComponent
    from dbmazz_pipelines.definitions import build_definitions
    from dbmazz_pipelines.naming import sensor_name

    config = PipelineConfig(
        name="p",
        source={"url": "postgresql://cap@db/shop", "password_env": "P_PW"},
        tables=["public.orders"],
        sinks={"duckdb": {"url": f"duckdb:///{tmp_path}/p.duckdb"}},
    )
    assert config.run_mode == "stream" and config.stream_minutes == 10
    repo = build_definitions({"p": config}).get_repository_def()
    # snapshot batches run as batch runs, live changes in the streaming run
    assert repo.has_job(stream_job_name("p")) and repo.has_job("p_batch")
    assert stream_job_name("p") in {t.job_name for t in repo.get_sensor_def(sensor_name("p")).targets}
    component = DbmazzPipelineComponent(
        source=config.source, tables=config.tables, sinks=config.sinks, changelog=str(tmp_path / "log")
    )
    assert component.pipeline_config("p").run_mode == "stream"


def _stream_request(shop, defs, instance) -> dg.RunRequest:
    result = shop.tick(defs, instance)
    assert len(result.run_requests) == 1, result.skip_message
    request = result.run_requests[0]
    assert request.job_name == stream_job_name(shop.name) and request.partition_key is None, request
    return request


def _run_stream(shop, defs, instance, request: dg.RunRequest, **config) -> dg.ExecuteInProcessResult:
    job = defs.resolve_job_def(stream_job_name(shop.name))
    run_config = {"ops": {f"{shop.name}__stream": {"config": {"stop_when_idle": True, **config}}}}
    return job.execute_in_process(instance=instance, run_config=run_config, tags=dict(request.tags))


def _start(shop, defs, instance) -> list[str]:
    """The shop gets its customers; the sensor sets the source up and plans the initial load, whose snapshot
    batches run as batch runs taking turns with streaming runs (each run here until idle), until it is done."""
    seed_customers(shop.source_url)
    kinds = []
    for _ in range(20):
        result = shop.tick(defs, instance)
        assert len(result.run_requests) == 1, result.skip_message
        request = result.run_requests[0]
        if request.partition_key is not None:
            assert shop.run_batch(defs, instance, request.partition_key).success
            kinds.append("snapshot")
            continue
        assert _run_stream(shop, defs, instance, request).success
        kinds.append("stream")
        snapshots = {p for p in shop.partitions(instance) if p.startswith("snap-")}
        if snapshots and snapshots <= instance.get_materialized_partitions(changes_key(shop.name)):
            _assert_equal(shop)
            return kinds
    raise AssertionError(f"the initial load did not end: {kinds}")


def _assert_equal(shop) -> None:
    for table in TABLES:
        assert shop.sink_rows(table) == shop.source_rows(table), table


def _log_partitions(shop, instance) -> list[str]:
    return [p for p in shop.partitions(instance) if not p.startswith("snap-")]


def test_a_streaming_run_records_each_batch_as_a_partition_with_its_checkpoint(pg_db, tmp_path, monkeypatch):
    shop = make_shop_pipeline(pg_db, tmp_path, monkeypatch, **STREAM)
    defs = shop.definitions()
    with dg.instance_for_test() as instance:
        kinds = _start(shop, defs, instance)
        assert "snapshot" in kinds and "stream" in kinds, (
            kinds
        )  # snapshot batch runs take turns with streaming
        _stream_request(shop, defs, instance)  # idle: a streaming run is kept alive all the same
        churn(pg_db.url, 1)
        request = _stream_request(shop, defs, instance)
        assert request.tags[KIND_TAG] == "stream"
        # writes for as long as the run lives (a loaded machine makes fewer, longer iterations)
        stop = threading.Event()

        def write() -> None:
            for seed in range(2, 1000):
                if stop.is_set():
                    return
                churn(pg_db.url, seed, n=10)
                time.sleep(0.3)

        writer = threading.Thread(target=write)
        writer.start()
        try:
            result = _run_stream(shop, defs, instance, request, max_seconds=6.0, stop_when_idle=False)
        finally:
            stop.set()
            writer.join()
        assert result.success
        batches = _log_partitions(shop, instance)
        assert len(batches) >= 3, batches  # one run, several batches, each a partition
        captured = instance.get_materialized_partitions(changes_key(shop.name))
        assert set(batches) <= captured
        for table in TABLES:
            assert set(batches) <= instance.get_materialized_partitions(
                sink_key(shop.name, "duckdb", table)
            ), table
        event = instance.get_latest_materialization_event(changes_key(shop.name)).asset_materialization
        assert event.partition == batches[-1]
        assert str(event.metadata["dbmazz/to"].value).count("/") == 1 and event.metadata["rows"].value >= 0
        orders = instance.get_latest_materialization_event(sink_key(shop.name, "duckdb", "public.orders"))
        assert "rows_written" in orders.asset_materialization.metadata
        # what the streaming run did not reach yet, the next one catches up; the sensor's cross-check agrees
        churn(pg_db.url, 9)
        assert _run_stream(shop, defs, instance, _stream_request(shop, defs, instance)).success
        _assert_equal(shop)
        _stream_request(
            shop, defs, instance
        )  # the sensor's checkpoint cross-check agrees with the streaming runs


def test_a_streaming_run_leaves_the_way_for_a_queued_run_of_the_pipeline(pg_db, tmp_path, monkeypatch):
    shop = make_shop_pipeline(pg_db, tmp_path, monkeypatch, **STREAM)
    defs = shop.definitions()
    with dg.instance_for_test() as instance:
        _start(shop, defs, instance)
        churn(pg_db.url, 1)
        request = _stream_request(shop, defs, instance)
        # a re-sync queued from the UI: the streaming run ends after its first batch, so the re-sync can run
        _queue_a_run(instance, f"{shop.name}_resync", {"dbmazz/pipeline": shop.name})
        began = time.monotonic()
        result = _run_stream(shop, defs, instance, request, max_seconds=60.0, stop_when_idle=False)
        assert result.success and time.monotonic() - began < 30
        logs = [e.message for e in instance.all_logs(result.run_id) if e.message]
        assert any("queued-" in m and "is queued" in m for m in logs), logs[-5:]
        _assert_equal(shop)


def _queue_a_run(instance, job: str, tags: dict) -> None:
    """A run of ``job`` waiting in the run queue (as the queued run coordinator holds one)."""
    from dagster._core.remote_origin import (
        InProcessCodeLocationOrigin,
        RemoteJobOrigin,
        RemoteRepositoryOrigin,
    )
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

    location = InProcessCodeLocationOrigin(LoadableTargetOrigin(python_file=__file__))
    origin = RemoteJobOrigin(RemoteRepositoryOrigin(location, "__repository__"), job)
    instance.add_run(dg.DagsterRun(job_name=job, run_id="queued-resync", tags=tags, remote_job_origin=origin))
    instance.report_dagster_event(
        dg.DagsterEvent(event_type_value=dg.DagsterEventType.RUN_ENQUEUED.value, job_name=job),
        run_id="queued-resync",
    )
    assert instance.get_run_by_id("queued-resync").status == dg.DagsterRunStatus.QUEUED


_CHILD = """
import sys
import dagster as dg
from dbmazz_connectors.config import PipelineConfig
from dbmazz_pipelines.definitions import build_definitions
from dbmazz_pipelines.stream import stream_job_name

config = PipelineConfig.model_validate_json(open(sys.argv[1]).read())
defs = build_definitions({config.name: config})
with dg.DagsterInstance.from_config(sys.argv[2]) as instance:
    job = defs.resolve_job_def(stream_job_name(config.name))
    job.execute_in_process(instance=instance, tags={"dbmazz/pipeline": config.name},
                           run_config={"ops": {config.name + "__stream": {"config": {"max_seconds": 120.0}}}})
"""


def _writer(url: str, stop: threading.Event) -> threading.Thread:
    """Order inserts, updates and deletes until ``stop``, a few hundred changes a second."""

    def write():
        rng = random.Random(7)
        with psycopg.connect(url, autocommit=True) as conn:
            while not stop.is_set():
                with conn.transaction():
                    for _ in range(5):
                        roll = rng.random()
                        if roll < 0.6:
                            conn.execute(
                                "INSERT INTO orders (customer_id, quantity, amount, status, note) "
                                "VALUES (%s, 1, %s, 'new', 'w')",
                                (rng.randint(1, 100), rng.randint(1, 999)),
                            )
                        elif roll < 0.9:
                            conn.execute(
                                "UPDATE orders SET quantity = quantity + 1 WHERE id = "
                                "(SELECT max(id) - %s FROM orders)",
                                (rng.randint(0, 20),),
                            )
                        else:
                            conn.execute("DELETE FROM orders WHERE id = (SELECT min(id) FROM orders)")
                time.sleep(0.01)

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    return thread


def test_a_sigkilled_streaming_run_is_recovered_by_the_next_without_losing_or_doubling_rows(
    pg_db, tmp_path: Path, monkeypatch
):
    shop = make_shop_pipeline(pg_db, tmp_path, monkeypatch, **STREAM)
    defs = shop.definitions()
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    config_path = tmp_path / "pipeline.json"
    config_path.write_text(shop.config.model_dump_json())
    with dg.DagsterInstance.from_config(str(home)) as instance:
        _start(shop, defs, instance)
        stop = threading.Event()
        writer = _writer(pg_db.url, stop)
        try:
            churn(pg_db.url, 1)
            _stream_request(shop, defs, instance)  # the sensor asks for a streaming run: it runs in a process
            child = subprocess.Popen(
                [sys.executable, "-c", _CHILD, str(config_path), str(home)], env=os.environ.copy()
            )
            deadline = time.monotonic() + 90
            while (
                len(
                    [
                        p
                        for p in instance.get_materialized_partitions(changes_key(shop.name))
                        if not p.startswith("snap-")
                    ]
                )
                < 3
            ):
                assert child.poll() is None and time.monotonic() < deadline, (
                    "the streaming run did not stream"
                )
                time.sleep(0.2)
            time.sleep(random.Random(11).uniform(0.0, 1.0))  # a random moment of the loop (capture or apply)
            child.send_signal(signal.SIGKILL)
            child.wait()
            run = instance.get_runs(dg.RunsFilter(job_name=stream_job_name(shop.name)))[0]
            assert run.status == dg.DagsterRunStatus.STARTED
            instance.report_run_failed(run)  # as run monitoring does for a dead run worker
            time.sleep(1.0)
        finally:
            stop.set()
            writer.join()
        # the sensor starts the next streaming run (one failure: no back-off); it finishes what the killed left
        result = _run_stream(shop, defs, instance, _stream_request(shop, defs, instance))
        assert result.success
        _assert_equal(shop)
        partitions = _log_partitions(shop, instance)
        for table in TABLES:
            applied = instance.get_materialized_partitions(sink_key(shop.name, "duckdb", table))
            assert set(partitions) <= applied, sorted(set(partitions) - applied)[:3]
        _stream_request(shop, defs, instance)  # and keeps one alive


def test_after_two_streaming_runs_failed_at_start_the_sensor_waits(pg_db, tmp_path, monkeypatch):
    shop = make_shop_pipeline(pg_db, tmp_path, monkeypatch, **STREAM)
    defs = shop.definitions()
    with dg.instance_for_test() as instance:
        _start(shop, defs, instance)
        churn(pg_db.url, 1)
        password = os.environ["TEST_SHOP_PASSWORD"]
        for _ in range(2):
            request = _stream_request(shop, defs, instance)
            monkeypatch.setenv("TEST_SHOP_PASSWORD", "not-the-password")  # the run cannot log in
            job = defs.resolve_job_def(stream_job_name(shop.name))
            assert not job.execute_in_process(
                instance=instance, tags=dict(request.tags), raise_on_error=False
            ).success
            monkeypatch.setenv("TEST_SHOP_PASSWORD", password)
        result = shop.tick(defs, instance)
        assert result.run_requests == []
        assert "the last two streaming runs of shop failed" in result.skip_message, result.skip_message
        assert "the next starts in" in result.skip_message
