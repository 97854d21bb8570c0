"""Asset checks per sink table: row-count parity with the source, and freshness of the applied batches."""


import time

import dagster as dg

from dbmazz_connectors.config import PipelineConfig

from .naming import changes_key, resource_key, sink_key

__all__ = ["build_sink_checks"]


def _latest_batch(instance: dg.DagsterInstance, key: dg.AssetKey) -> tuple[str | None, float | None]:
    event = instance.get_latest_materialization_event(key)
    if event is None or event.asset_materialization is None:
        return None, None
    batch = event.asset_materialization.metadata.get("dbmazz/batch")
    return (batch.value if batch is not None else None), event.timestamp


def _parity(context, pipeline: PipelineConfig, sink: str, table: str) -> dg.AssetCheckResult:
    resource = getattr(context.resources, resource_key(pipeline.name))
    source, target = resource.source(), resource.sink(sink)
    try:
        source_rows, sink_rows = source.row_count(table), target.row_count(table)
    finally:
        source.disconnect()
        target.disconnect()
    return dg.AssetCheckResult(
        passed=source_rows == sink_rows,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"source_rows": source_rows, "sink_rows": sink_rows, "difference": sink_rows - source_rows},
        description="counts taken now; a source changing faster than the sensor interval shows a transient difference",
    )


def _freshness(context, pipeline: PipelineConfig, sink: str, table: str) -> dg.AssetCheckResult:
    max_lag = max(60, 10 * pipeline.poll_interval_seconds)
    captured, captured_at = _latest_batch(context.instance, changes_key(pipeline.name))
    applied, applied_at = _latest_batch(context.instance, sink_key(pipeline.name, sink, table))
    behind = captured is not None and applied != captured
    lag = round(time.time() - (applied_at or captured_at or time.time()), 1) if behind else 0.0
    return dg.AssetCheckResult(
        passed=lag <= max_lag,
        metadata={"latest_captured_batch": captured or "", "latest_applied_batch": applied or "",
                  "lag_seconds": lag, "max_lag_seconds": max_lag},
    )


def build_sink_checks(pipeline: PipelineConfig) -> list[dg.AssetChecksDefinition]:
    checks = []
    for sink in pipeline.sinks:
        for table in pipeline.tables:
            asset = sink_key(pipeline.name, sink, table)
            checks.append(_make_check(pipeline, sink, table, asset, "row_count_parity", _parity,
                                      "source and sink have the same number of rows"))
            checks.append(_make_check(pipeline, sink, table, asset, "freshness", _freshness,
                                      "the newest captured batch is applied, or applied within the allowed lag"))
    return checks


def _make_check(pipeline, sink, table, asset, name, body, description):
    @dg.asset_check(
        asset=asset,
        name=name,
        description=description,
        required_resource_keys={resource_key(pipeline.name)},
    )
    def _check(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        return body(context, pipeline, sink, table)

    return _check
