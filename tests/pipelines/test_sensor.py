"""The capture sensor plans exactly one batch per new range and nothing while idle or in flight."""

import dagster as dg
import psycopg
import pytest
from dagster._core.test_utils import create_run_for_test

from dbmazz_pipelines.naming import job_name

from ._harness import make_shop_pipeline, start_shop


def _write_orders(url: str, n: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO orders (customer_id, quantity, amount, status) "
            "SELECT g %% 100 + 1, g %% 7, g * 1.25, 'new' FROM generate_series(1, %s) g",
            (n,),
        )


def test_idle_source_requests_nothing_and_a_new_range_exactly_one_run(pg_db, tmp_path, monkeypatch):
    shop = make_shop_pipeline(pg_db, tmp_path, monkeypatch)
    defs = shop.definitions()
    with dg.instance_for_test() as instance:
        first = shop.tick(defs, instance)  # sets the source up and plans the (empty) tables' initial load
        assert [r.tags["dbmazz/kind"] for r in first.run_requests] == ["snapshot"], first.skip_message
        shop.run_batch(defs, instance, first.run_requests[0].partition_key)
        assert shop.drive(defs, instance), "the initial load's sweep runs once its chunks are captured"
        assert not shop.tick(defs, instance).run_requests, "an idle source requests nothing"
        assert all(p.startswith("snap-") for p in shop.partitions(instance))

        _write_orders(pg_db.url, 10)
        result = shop.tick(defs, instance)
        assert len(result.run_requests) == 1
        request = result.run_requests[0]
        log_batches = [p for p in shop.partitions(instance) if not p.startswith("snap-")]
        assert request.run_key == request.partition_key == log_batches[0]

        # the planned batch has not run: the next tick plans nothing newer
        _write_orders(pg_db.url, 5)
        blocked = shop.tick(defs, instance)
        assert not blocked.run_requests and "has not been captured" in blocked.skip_message


def test_nothing_is_requested_while_a_batch_run_is_in_flight(pg_db, tmp_path, monkeypatch):
    shop = make_shop_pipeline(pg_db, tmp_path, monkeypatch)
    defs = shop.definitions()
    with dg.instance_for_test() as instance:
        start_shop(shop, defs, instance)
        _write_orders(pg_db.url, 3)
        create_run_for_test(instance, job_name=job_name(shop.name), status=dg.DagsterRunStatus.STARTED)
        skipped = shop.tick(defs, instance)
        assert not skipped.run_requests and "in flight" in skipped.skip_message


def test_a_password_written_in_the_config_is_refused(tmp_path):
    from dbmazz_connectors.config import PipelineConfig
    from dbmazz_connectors.core import ConfigError
    from dbmazz_pipelines.definitions import build_definitions

    leaky = PipelineConfig(
        name="p",
        source={"url": "postgresql://cap:hunter2@db/shop"},
        tables=["public.t"],
        sinks={"duckdb": {"url": f"duckdb:///{tmp_path}/x.duckdb"}},
    )
    defs = build_definitions({"p": leaky})  # the pipeline is not loaded; its sensor fails with the reason
    assert "dbmazz_p" not in (defs.resources or {}) and not defs.get_repository_def().has_job("p_batch")
    sensor = defs.get_repository_def().get_sensor_def("p_capture")
    with dg.instance_for_test() as instance, dg.build_sensor_context(instance=instance) as context:
        with pytest.raises(ConfigError, match="holds a password in clear") as error:
            sensor.evaluate_tick(context)
    assert "hunter2" not in str(error.value)
    safe = leaky.model_copy(update={"source": {"url": "postgresql://cap:${SHOP_PW}@db/shop"}})
    stored = build_definitions({"p": safe}).resources["dbmazz_p"].source.url
    assert "${SHOP_PW}" in stored  # what Dagster stores is the reference, resolved only in the run


class _CountingFs:
    """The change log's filesystem, counting what a tick asks of it: objects read, listings, entries listed."""

    def __init__(self, fs, counts: dict) -> None:
        self._fs, self._counts = fs, counts

    def open_input_stream(self, path, *args, **kwargs):
        self._counts["reads"] += 1
        return self._fs.open_input_stream(path, *args, **kwargs)

    def open_input_file(self, path, *args, **kwargs):
        self._counts["reads"] += 1
        return self._fs.open_input_file(path, *args, **kwargs)

    def get_file_info(self, what):
        import pyarrow.fs as pafs

        found = self._fs.get_file_info(what)
        if isinstance(what, pafs.FileSelector):
            self._counts["listings"] += 1
            self._counts["listed"] += len(found)
        else:
            self._counts["reads"] += 1 if isinstance(what, str) else len(what)
        return found

    def __getattr__(self, name):
        return getattr(self._fs, name)


def _counted_tick(shop, defs, instance, monkeypatch) -> dict:
    """One sensor tick; what it read of the change log."""
    from dbmazz_connectors.changelog import store

    counts = {"reads": 0, "listings": 0, "listed": 0}
    init = store.ChangeLog.__init__

    def counting_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.fs = _CountingFs(self.fs, counts)

    with monkeypatch.context() as patch:
        patch.setattr(store.ChangeLog, "__init__", counting_init)
        result = shop.tick(defs, instance)
    assert not result.run_requests, result  # an idle tick
    return counts


def test_a_tick_reads_as_many_change_log_objects_with_200_batches_kept_as_with_a_few(
    pg_db, tmp_path, monkeypatch
):
    from dbmazz_connectors.changelog import ChangeLog
    from dbmazz_connectors.sources.postgres.position import Lsn
    from dbmazz_pipelines.naming import batch_partitions

    from ._harness import churn

    shop = make_shop_pipeline(pg_db, tmp_path, monkeypatch)
    defs = shop.definitions()
    with dg.instance_for_test() as instance:
        start_shop(shop, defs, instance)
        churn(pg_db.url, 1)
        assert all(run.success for run in shop.drive(defs, instance))
        _counted_tick(shop, defs, instance, monkeypatch)  # the process has seen the kept batches once
        few = _counted_tick(shop, defs, instance, monkeypatch)
        # 200 more kept batches (old, applied ranges as retention keeps them), each a partition
        changelog, ids = ChangeLog(shop.config.changelog), []
        for i in range(200):
            start, end = Lsn(1000 + 10 * i), Lsn(1010 + 10 * i)
            batch_id = f"{start.value:020d}-{end.value:020d}"
            writer = changelog.writer(shop.name, batch_id, start)
            writer.end = end
            writer.commit()
            ids.append(batch_id)
        instance.add_dynamic_partitions(batch_partitions(shop.name).name, ids)
        first = _counted_tick(shop, defs, instance, monkeypatch)
        many = _counted_tick(shop, defs, instance, monkeypatch)
        print(f"change log per idle tick: {few} with a few batches, {first} then {many} with 200 more")
        assert many["reads"] == few["reads"] and many["listings"] == few["listings"], (few, many)
        assert many["listed"] == few["listed"] + 200  # names only: one request per 1000 on an object store
        assert first["reads"] <= few["reads"] + 200  # the new manifests, once per process
