"""A pipeline's assets: source tables (external), ``<pipeline>/changes`` (capture), one per sink table (apply)."""

import time
from datetime import UTC, datetime

import dagster as dg

from dbmazz_connectors.changelog import BatchManifest, ChangeLog
from dbmazz_connectors.config import PipelineConfig
from dbmazz_connectors.core import (
    ChangeLogError,
    SinkError,
    SourcePosition,
    TableChangedError,
    TransientError,
    position_from_dict,
)
from dbmazz_connectors.engine import apply_batch, capture_range
from dbmazz_connectors.snapshots import capture_snapshot_batch, is_snapshot_batch

from .freshness import ReplayGuard
from .metadata import PARTITION_ROW_COUNT, describe_sink_table, sink_table_metadata, source_schema_events
from .naming import (
    KIND_TAG,
    TABLE_METADATA,
    batch_partitions,
    pool_name,
    resource_key,
    resync_job_name,
    table_identifier,
)
from .snapshot_batches import snapshot_metadata
from .translator import PipelineSpecs

__all__ = [
    "build_source_specs",
    "build_changes_asset",
    "build_sink_assets",
    "capture_metadata",
    "position_of",
    "run_batches",
    "capture_log_batch",
    "apply_table",
    "BACKFILL_POLICY",
    "MAX_BATCHES_PER_RUN",
]

# A backfill or re-run over many batches runs them in a few runs, each a range of batches applied in order
# (docs/dagster.md, "Backfills"); the range is bounded so that one run's steps hold the pipeline's pool briefly.
MAX_BATCHES_PER_RUN = 25
BACKFILL_POLICY = dg.BackfillPolicy.multi_run(max_partitions_per_run=MAX_BATCHES_PER_RUN)


def build_source_specs(specs: PipelineSpecs) -> list[dg.AssetSpec]:
    """The source tables: external assets (never materialized; a capture run records their schema)."""
    return list(specs.sources.values())


def _planned_range(changelog: ChangeLog, pipeline: str, batch_id: str):
    plan = changelog.plan(pipeline, batch_id)
    if plan is not None:
        return plan
    manifest = changelog.manifest(pipeline, batch_id)
    if manifest is not None:
        return manifest.start, manifest.end
    raise ChangeLogError(
        f"batch {batch_id} of pipeline {pipeline} has no planned range in the change log {changelog.root}; "
        "batches are planned by the capture sensor and cannot be invented from the UI"
    )


def capture_metadata(manifest: BatchManifest, lag_bytes: int | None, seconds: float) -> dict[str, object]:
    """The checkpoint a capture records, as materialization metadata (see docs/operations.md)."""
    now_us = int(datetime.now(UTC).timestamp() * 1_000_000)
    newest = max((t.max_commit_ts_us or 0 for t in manifest.tables.values()), default=0)
    by_table = {name: dict(entry.ops) for name, entry in manifest.tables.items()}
    rows_md = "\n".join(
        f"| {n} | {o['insert']} | {o['update']} | {o['delete']} |" for n, o in sorted(by_table.items())
    )
    return {
        "dbmazz/batch": manifest.batch_id,
        KIND_TAG: "cdc",
        "dbmazz/from": str(manifest.start),
        "dbmazz/to": str(manifest.end),
        "dbmazz/from_position": dg.MetadataValue.json(manifest.start.to_dict()),
        "dbmazz/to_position": dg.MetadataValue.json(manifest.end.to_dict()),
        "rows": manifest.rows,
        PARTITION_ROW_COUNT: manifest.rows,
        "rows_by_table": dg.MetadataValue.json(by_table),
        "rows_table": dg.MetadataValue.md(
            "| table | insert | update | delete |\n|---|---|---|---|\n" + rows_md
        ),
        "bytes_staged": manifest.bytes,
        **({"source_lag_bytes": lag_bytes} if lag_bytes is not None else {}),
        "source_lag_seconds": round((now_us - newest) / 1e6, 3) if newest else 0.0,
        "duration_seconds": round(seconds, 3),
    }


def build_changes_asset(specs: PipelineSpecs) -> dg.AssetsDefinition:
    pipeline = specs.pipeline
    key = resource_key(pipeline.name)
    spec = specs.changes.replace_attributes(
        deps=[specs.source_key(t) for t in pipeline.tables], partitions_def=batch_partitions(pipeline.name)
    )

    @dg.multi_asset(
        name=f"{pipeline.name}__changes",
        specs=[spec],
        required_resource_keys={key},
        pool=pool_name(pipeline.name),
        backfill_policy=BACKFILL_POLICY,
    )
    def changes(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        resource = getattr(context.resources, key)
        batches = run_batches(context)
        for (
            batch_id
        ) in batches:  # a range (a backfill): in order, each batch captured once (a captured one is kept)
            capture = _capture_snapshot if is_snapshot_batch(batch_id) else _capture_changes
            result = capture(context, specs, resource, batch_id)
        return _over_range(result, batches)

    return changes


def run_batches(context: dg.AssetExecutionContext) -> list[str]:
    """The batches (partitions) of this run in source order: one for a batch run, a range for a backfill run.

    Log batch ids are ``<start>-<end>`` (20 digits each), so their order is the source's; snapshot batches
    (``snap-...``) come after them, chunk batches before their sweep. Any order is correct (docs/architecture.md,
    "The ordering invariant"); this one is the order the sensor would have run them in."""
    return sorted(context.partition_keys)


def _over_range(result: dg.MaterializeResult, batches: list[str]) -> dg.MaterializeResult:
    """One run of several batches records one materialization per partition with the same metadata: that of
    the last batch (its checkpoint), and which batches the run covered."""
    if len(batches) == 1:
        return result
    metadata = {
        **(result.metadata or {}),
        "dbmazz/batches_in_run": len(batches),
        "dbmazz/first_batch_in_run": batches[0],
        "dbmazz/last_batch_in_run": batches[-1],
    }
    return dg.MaterializeResult(asset_key=result.asset_key, metadata=metadata)


def _capture_changes(
    context: dg.AssetExecutionContext, specs: PipelineSpecs, resource, batch_id: str
) -> dg.MaterializeResult:
    """A log batch: the planned range (checkpoint, upper bound], then the source is acknowledged."""
    changelog = resource.open_changelog()
    source = resource.connect_source()
    try:
        manifest, metadata = capture_log_batch(context, specs, source, changelog, batch_id)
    finally:
        source.disconnect()
    return dg.MaterializeResult(asset_key=specs.changes_key, metadata=metadata)


def capture_log_batch(
    context, specs: PipelineSpecs, source, changelog: ChangeLog, batch_id: str
) -> tuple[BatchManifest, dict[str, object]]:
    """Capture a planned log batch with a connected source (a batch run's capture step, and each batch of a
    streaming run): its manifest and the checkpoint metadata its materialization records."""
    pipeline = specs.pipeline
    start, end = _planned_range(changelog, pipeline.name, batch_id)
    began = time.monotonic()
    try:
        schemas = source.table_schemas()
        manifest = capture_range(
            source, changelog, pipeline.name, start, end, batch_id=batch_id, tables=schemas.values()
        )
        current = source.current_position()
        lag = current.bytes_since(
            manifest.end
        )  # bytes of source log not captured yet, where the source can tell
    except TableChangedError as exc:
        raise _with_resync_hint(pipeline, exc) from None  # one error, its fix in Dagster terms
    _record_source_schemas(context, specs, schemas)
    context.log.info(f"batch {batch_id}: {manifest.rows} changes from {manifest.start} to {manifest.end}")
    return manifest, capture_metadata(manifest, lag, time.monotonic() - began)


def _record_source_schemas(context, specs: PipelineSpecs, schemas) -> None:
    """The source tables' column schemas, recorded on their (external) assets when they changed."""
    for event in source_schema_events(specs.source_keys, schemas, context.instance):
        context.log_event(event)


def _with_resync_hint(pipeline: PipelineConfig, exc: TableChangedError) -> TableChangedError:
    """The same error, its fix spelled out in Dagster terms: the re-sync job of this pipeline for that table."""
    fix = (
        f"{exc.fix}; in Dagster: launch the job {resync_job_name(pipeline.name)} (it runs the setup) with run "
        f"config tables: [{exc.table}], then re-run this partition (docs/operations.md, 'A re-created table')"
    )
    return TableChangedError(exc.table, exc.detail, fix)


def _capture_snapshot(
    context: dg.AssetExecutionContext, specs: PipelineSpecs, resource, batch_id: str
) -> dg.MaterializeResult:
    """A snapshot batch: its planned chunks read into the change log; the checkpoint does not move."""
    pipeline = specs.pipeline
    changelog = resource.open_changelog()
    began = time.monotonic()
    source = resource.connect_source()
    try:
        manifest = capture_snapshot_batch(
            source, changelog, pipeline.name, batch_id, pipeline.snapshot_settings()
        )
    finally:
        source.disconnect()
    metadata = snapshot_metadata(changelog, manifest, time.monotonic() - began)
    _record_source_schemas(context, specs, {name: entry.schema for name, entry in manifest.tables.items()})
    context.log.info(f"snapshot batch {batch_id} ({metadata['dbmazz/snapshot_batch']}): {manifest.rows} rows")
    return dg.MaterializeResult(asset_key=specs.changes_key, metadata=metadata)


def build_sink_assets(specs: PipelineSpecs, sink: str) -> dg.AssetsDefinition:
    pipeline = specs.pipeline
    key = resource_key(pipeline.name)
    outs = {
        # explicit output names: two table names may clean to the same key's python identifier
        table_identifier(table): dg.AssetOut.from_spec(
            specs.sinks[(sink, table)].replace_attributes(deps=[]), is_required=False
        )
        for table in pipeline.tables
    }
    tables = {specs.sink_key(sink, table): table for table in pipeline.tables}

    @dg.multi_asset(
        name=f"{pipeline.name}__{sink}__apply",
        outs=outs,
        deps=[specs.changes_key],
        can_subset=True,
        partitions_def=batch_partitions(pipeline.name),
        required_resource_keys={key},
        pool=pool_name(pipeline.name),
        backfill_policy=BACKFILL_POLICY,
    )
    def apply(context: dg.AssetExecutionContext):
        resource = getattr(context.resources, key)
        changelog = resource.open_changelog()
        batches = run_batches(context)
        manifests = [_captured(changelog, pipeline.name, batch_id) for batch_id in batches]
        selected = sorted(tables[k] for k in context.selected_asset_keys)
        target = resource.connect_sink(sink)
        failed: dict[str, Exception] = {}
        try:
            for table in selected:
                guard = ReplayGuard.before_apply(context.instance, specs.sink_key(sink, table), batches)
                try:
                    metadata = _apply_range(changelog, target, specs, manifests, table, context.log)
                except TransientError:
                    raise  # the sink itself is gone: every other table would fail the same way; retried whole
                except Exception as exc:  # noqa: BLE001 - one table's failure must not stop the others
                    failed[table] = exc
                    context.log.error(
                        f"sink {sink}: table {table} failed to apply {exc.batch_id}: {exc.__cause__}"
                    )
                    continue
                yield _over_range(
                    dg.MaterializeResult(
                        asset_key=specs.sink_key(sink, table), metadata={**metadata, **guard.metadata}
                    ),
                    batches,
                )
                guard.after_apply(
                    context.instance, context.run.run_id, batches, context.log
                )  # a replay: freshness.py
        finally:
            target.disconnect()
        if failed:
            raise _tables_failed(sink, batches, selected, failed)

    return apply


def _captured(changelog: ChangeLog, pipeline: str, batch_id: str) -> BatchManifest:
    manifest = changelog.manifest(pipeline, batch_id)
    if manifest is None:
        raise ChangeLogError(
            f"batch {batch_id} is not in the change log (never captured, or pruned by retention); "
            f"re-sync the table instead of re-applying this batch"
        )
    return manifest


class _BatchFailed(Exception):
    """One table failed at one batch of the run (later batches of the run were not applied to it)."""

    def __init__(self, batch_id: str) -> None:
        super().__init__(batch_id)
        self.batch_id = batch_id


def _apply_range(
    changelog: ChangeLog, target, specs: PipelineSpecs, manifests: list[BatchManifest], table: str, log
) -> dict:
    """Apply the run's batches to one table in order, each exactly once (an applied one is skipped by the
    sink); a failure stops the table there. The metadata: the last batch's, the table's after the last."""
    rows_written = 0
    for i, manifest in enumerate(manifests):
        try:
            metadata = apply_table(
                changelog, target, specs, manifest, table, log, describe=i == len(manifests) - 1
            )
        except TransientError:
            raise
        except Exception as exc:
            raise _BatchFailed(manifest.batch_id) from exc
        rows_written += int(metadata.get("rows_written", 0))
    if len(manifests) > 1:
        metadata["rows_written_in_run"] = rows_written
    return metadata


def apply_table(
    changelog: ChangeLog,
    target,
    specs: PipelineSpecs,
    manifest: BatchManifest,
    table: str,
    log,
    describe: bool = True,
) -> dict:
    """Apply one table's changes of the batch to the sink; its materialization metadata: what the batch did,
    then the table as the sink now holds it (Dagster's standard table metadata, see ``metadata.py``)."""
    entry = manifest.tables.get(table)
    if entry is None:
        metadata: dict[str, object] = {
            "dbmazz/batch": manifest.batch_id,
            "rows_written": 0,
            PARTITION_ROW_COUNT: 0,
        }
    else:
        result = apply_batch(changelog, target, specs.pipeline.name, manifest.batch_id, tables=[table])[table]
        metadata = _apply_metadata(manifest.batch_id, result, entry)
    table_md = _sink_table_metadata(target, specs, table, entry, log) if describe else {}
    return {**metadata, **table_md, TABLE_METADATA: table, **_kind_metadata(manifest)}


def _sink_table_metadata(target, specs: PipelineSpecs, table: str, entry, log) -> dict[str, object]:
    """The sink table's standard metadata; the batch is applied already, so a failure to read it is logged,
    not raised (the table would otherwise be reported failed and re-run for nothing)."""
    try:
        described = describe_sink_table(target, table)
        rows = target.row_count(table) if described is not None else None
    except TransientError:
        raise
    except Exception as exc:  # noqa: BLE001 - metadata only
        log.warning(f"table {table}: applied, but its columns and row count could not be read: {exc}")
        return {}
    return sink_table_metadata(described, rows, specs.source_key(table), entry.schema if entry else None)


def _tables_failed(
    sink: str, batches: list[str], selected: list[str], failed: dict[str, Exception]
) -> SinkError:
    """One error naming every table that failed, at which batch and why; the other tables were applied."""
    reasons = "; ".join(
        f"{table}: {type(exc.__cause__).__name__}: {exc.__cause__}"
        + (f" (at batch {exc.batch_id}; the batches before it were applied)" if len(batches) > 1 else "")
        for table, exc in failed.items()
    )
    applied = len(selected) - len(failed)
    what = f"batch {batches[0]}" if len(batches) == 1 else f"batches {batches[0]} .. {batches[-1]}"
    error = SinkError(
        f"sink {sink}: {len(failed)} of {len(selected)} tables failed to apply {what} ({reasons}); "
        f"the other {applied} were applied",
        hint="fix the cause named for each table, then re-run this partition (applied tables are skipped)",
    )
    error.__cause__ = next(iter(failed.values())).__cause__
    return error


def _kind_metadata(manifest: BatchManifest) -> dict[str, object]:
    if not manifest.is_snapshot:
        return {KIND_TAG: "cdc"}
    return {KIND_TAG: "snapshot", "dbmazz/snapshot": (manifest.snapshot or {}).get("id", "")}


def _apply_metadata(batch_id: str, result, entry) -> dict[str, object]:
    now_us = int(datetime.now(UTC).timestamp() * 1_000_000)
    metadata: dict[str, object] = {
        "dbmazz/batch": batch_id,
        "rows_written": result.rows_written,
        PARTITION_ROW_COUNT: result.rows_written,
        "already_applied": result.already_applied,
        "changes_in_batch": entry.rows,
    }
    if result.high_water_version is not None:
        metadata["high_water_version"] = result.high_water_version
    if entry.max_commit_ts_us:
        metadata["newest_source_commit"] = datetime.fromtimestamp(
            entry.max_commit_ts_us / 1e6, UTC
        ).isoformat()
        metadata["commit_to_visible_seconds"] = round((now_us - entry.max_commit_ts_us) / 1e6, 3)
    metadata.update({f"details/{k}": v for k, v in result.details.items()})
    return metadata


def position_of(metadata: dict) -> SourcePosition | None:
    """The ``dbmazz/to`` position recorded in a capture materialization's metadata."""
    value = metadata.get("dbmazz/to_position")
    if value is None:
        return None
    return position_from_dict(value.value if hasattr(value, "value") else value)
