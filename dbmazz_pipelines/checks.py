"""Asset checks per sink table: row-count parity with the source, freshness, and whether its initial load is complete."""


import time

import dagster as dg

from .naming import TABLE_METADATA, resource_key, table_identifier
from .snapshot_batches import load_progress
from .translator import PipelineSpecs

__all__ = ["build_sink_checks"]

# Dagster runs the checks of the assets a backfill selects in each of its runs (once per run, never per
# partition); the parity check, which queries the source, is left to the checks job there.
BACKFILL_TAG = "dagster/backfill"


def _latest_batch(instance: dg.DagsterInstance, key: dg.AssetKey) -> tuple[str | None, float | None]:
    event = instance.get_latest_materialization_event(key)
    if event is None or event.asset_materialization is None:
        return None, None
    batch = event.asset_materialization.metadata.get("dbmazz/batch")
    return (batch.value if batch is not None else None), event.timestamp


def _parity(context, specs: PipelineSpecs, sink: str, table: str) -> dg.AssetCheckResult:
    pipeline = specs.pipeline
    resource = getattr(context.resources, resource_key(pipeline.name))
    source, target = resource.connect_source(), resource.connect_sink(sink)
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


def _freshness(context, specs: PipelineSpecs, sink: str, table: str) -> dg.AssetCheckResult:
    pipeline = specs.pipeline
    max_lag = max(60, 10 * pipeline.poll_interval_seconds)
    captured, captured_at = _latest_batch(context.instance, specs.changes_key)
    applied, applied_at = _latest_batch(context.instance, specs.sink_key(sink, table))
    behind = captured is not None and applied != captured
    lag = round(time.time() - (applied_at or captured_at or time.time()), 1) if behind else 0.0
    return dg.AssetCheckResult(
        passed=lag <= max_lag,
        metadata={"latest_captured_batch": captured or "", "latest_applied_batch": applied or "",
                  "lag_seconds": lag, "max_lag_seconds": max_lag},
    )


def _initial_load(context, specs: PipelineSpecs, sink: str, table: str) -> dg.AssetCheckResult:
    """Passes once every batch of a whole-table snapshot of the table (its initial load, or a later full
    re-sync) is applied to this sink table; until then it reports the progress."""
    pipeline = specs.pipeline
    changelog = getattr(context.resources, resource_key(pipeline.name)).open_changelog()
    progress = load_progress(context.instance, changelog, pipeline.name, table, specs.sink_key(sink, table))
    if progress is None:
        return dg.AssetCheckResult(
            passed=False, severity=dg.AssetCheckSeverity.WARN, metadata={"progress": "no snapshot planned"},
            description="no initial load planned yet: the capture sensor plans it when it sets the source up or "
                        "finds the table in the configuration (is the sensor running?)",
        )
    plan = progress.plan
    return dg.AssetCheckResult(
        passed=progress.complete,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"snapshot": plan.snapshot_id, "reason": plan.reason,
                  "progress": f"{progress.applied} of {progress.needed} batches",
                  "batches_applied": progress.applied, "batches": progress.needed},
        description=(f"{plan.reason} complete" if progress.complete else
                     f"{plan.reason} in progress: {progress.applied} of {progress.needed} batches applied "
                     "(a failed batch waits for a re-run of its partition)"),
    )


def build_sink_checks(specs: PipelineSpecs) -> list[dg.AssetChecksDefinition]:
    pipeline = specs.pipeline
    checks = []
    for sink in pipeline.sinks:
        for table in pipeline.tables:
            asset = specs.sink_key(sink, table)
            checks.append(_make_check(specs, sink, table, asset, "row_count_parity", _parity,
                                      "source and sink have the same number of rows", expensive=True))
            checks.append(_make_check(specs, sink, table, asset, "freshness", _freshness,
                                      "the newest captured batch is applied, or applied within the allowed lag"))
            checks.append(_make_check(specs, sink, table, asset, "initial_load", _initial_load,
                                      "every batch of the table's initial load (a whole-table snapshot) is applied"))
    return checks


def _make_check(specs, sink, table, asset, name, body, description, expensive=False):
    pipeline = specs.pipeline
    # an explicit op name: Dagster's default is built from the asset key, which two tables may share once
    # cleaned (public.a_b, public_a.b) and which is not a valid name for a table with a space
    @dg.multi_asset_check(
        specs=[dg.AssetCheckSpec(name, asset=asset, description=description, metadata={TABLE_METADATA: table})],
        name=f"{pipeline.name}__{sink}__{table_identifier(table)}__{name}",
        required_resource_keys={resource_key(pipeline.name)},
        can_subset=True,
    )
    def _check(context: dg.AssetCheckExecutionContext):
        if expensive and BACKFILL_TAG in context.run.tags:
            context.log.info(f"{name} is not evaluated in a backfill run; the checks job evaluates it")
            return
        yield body(context, specs, sink, table)

    return _check
