"""Retention's tombstone step: every sink that can forgets the tombstones below the change log's horizon."""

import logging

from dbmazz_connectors.config import PipelineConfig
from dbmazz_connectors.core import create_sink
from dbmazz_connectors.engine import apply_batch
from dbmazz_pipelines.retention import forget_tombstones

from ._kit import EXPECTED, write_log


def test_retention_forgets_tombstones_of_the_sinks_that_can_and_logs_how_many(
    ch_db, sr_db, changelog, tmp_path, caplog
):
    sinks = {
        "clickhouse": {"url": ch_db.url},
        "starrocks": {"url": sr_db.url},
        "duckdb": {"url": f"duckdb:///{tmp_path / 'sink.duckdb'}"},
    }
    pipeline = PipelineConfig(
        name="p",
        source={"url": "postgresql://u@localhost/db"},
        tables=["public.items"],
        sinks=sinks,
        changelog=changelog.root,
    )
    ids = write_log(changelog)
    for name in sinks:
        sink = create_sink(pipeline.sink_config(name))
        sink.connect()
        for batch_id in ids:
            apply_batch(changelog, sink, "p", batch_id)
        sink.disconnect()
    for batch_id in ("b1", "b2", "b3"):
        changelog.delete_batch("p", batch_id)

    with caplog.at_level(logging.INFO):
        forgotten = forget_tombstones(changelog, pipeline, logging.getLogger("test"))
    assert forgotten["clickhouse"] == 150 and forgotten["starrocks"] == 150
    assert forgotten.get("duckdb", 150) == 150  # a sink without the capability is skipped
    assert "sink clickhouse forgot 150 tombstones below version 3000" in caplog.text
    assert set(forget_tombstones(changelog, pipeline).values()) == {0}  # idempotent
    for name in ("clickhouse", "starrocks"):
        sink = create_sink(pipeline.sink_config(name))
        sink.connect()
        assert sink.row_count("public.items") == len(EXPECTED)
        sink.disconnect()


def test_dagster_retention_prunes_the_log_then_the_tombstones_below_it(ch_db, changelog, monkeypatch):
    import dagster as dg

    from dbmazz_pipelines import retention
    from dbmazz_pipelines.retention import prune

    monkeypatch.setattr(
        retention, "_last_forgotten", {}
    )  # no earlier prune of a pipeline "p" in this process
    from dbmazz_pipelines.translator import PipelineSpecs

    pipeline = PipelineConfig(
        name="p",
        source={"url": "postgresql://u@localhost/db"},
        tables=["public.items"],
        sinks={"clickhouse": {"url": ch_db.url}},
        changelog=changelog.root,
        retention_batches=10,
    )
    ids = write_log(changelog)
    sink = create_sink(pipeline.sink_config("clickhouse"))
    sink.connect()
    for batch_id in ids:
        apply_batch(changelog, sink, "p", batch_id)
    partitions = [*ids, *(f"c{i:02d}" for i in range(9))]  # 13 kept, 10 retained: b1..b3 go
    specs = PipelineSpecs.resolve(pipeline)
    with dg.DagsterInstance.ephemeral() as instance:
        for partition in partitions:
            instance.report_runless_asset_event(
                dg.AssetMaterialization(specs.sink_key("clickhouse", "public.items"), partition=partition)
            )
        assert prune(instance, specs, changelog, partitions) == ["b1", "b2", "b3"]
    assert [m.batch_id for m in changelog.batches("p")] == ["b4"]
    assert int(sink.query_rows("SELECT count() FROM items WHERE _dbmazz_is_deleted = 1")[0][0]) == 0
    assert sink.row_count("public.items") == len(EXPECTED)
    sink.disconnect()
