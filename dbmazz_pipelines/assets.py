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

from .metadata import PARTITION_ROW_COUNT, describe_sink_table, sink_table_metadata, source_schema_events
from .naming import (
    KIND_TAG,
    TABLE_METADATA,
    batch_partitions,
    resource_key,
    resync_job_name,
    table_identifier,
)
from .snapshot_batches import snapshot_metadata
from .translator import PipelineSpecs

__all__ = ["build_source_specs", "build_changes_asset", "build_sink_assets", "capture_metadata", "position_of"]


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
    rows_md = "\n".join(f"| {n} | {o['insert']} | {o['update']} | {o['delete']} |" for n, o in sorted(by_table.items()))
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
        "rows_table": dg.MetadataValue.md("| table | insert | update | delete |\n|---|---|---|---|\n" + rows_md),
        "bytes_staged": manifest.bytes,
        **({"source_lag_bytes": lag_bytes} if lag_bytes is not None else {}),
        "source_lag_seconds": round((now_us - newest) / 1e6, 3) if newest else 0.0,
        "duration_seconds": round(seconds, 3),
    }


def build_changes_asset(specs: PipelineSpecs) -> dg.AssetsDefinition:
    pipeline = specs.pipeline
    key = resource_key(pipeline.name)
    spec = specs.changes.replace_attributes(
        deps=[specs.source_key(t) for t in pipeline.tables], partitions_def=batch_partitions(pipeline.name))

    @dg.multi_asset(
        name=f"{pipeline.name}__changes",
        specs=[spec],
        required_resource_keys={key},
    )
    def changes(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        resource = getattr(context.resources, key)
        if is_snapshot_batch(context.partition_key):
            return _capture_snapshot(context, specs, resource)
        return _capture_changes(context, specs, resource)

    return changes


def _capture_changes(context: dg.AssetExecutionContext, specs: PipelineSpecs, resource) -> dg.MaterializeResult:
    """A log batch: the planned range (checkpoint, upper bound], then the source is acknowledged."""
    pipeline = specs.pipeline
    changelog = resource.open_changelog()
    batch_id = context.partition_key
    start, end = _planned_range(changelog, pipeline.name, batch_id)
    began = time.monotonic()
    source = resource.connect_source()
    try:
        schemas = source.table_schemas()
        manifest = capture_range(source, changelog, pipeline.name, start, end, batch_id=batch_id, tables=schemas.values())
        current = source.current_position()
        lag = current.bytes_since(manifest.end)  # bytes of source log not captured yet, where the source can tell
    except TableChangedError as exc:
        raise _with_resync_hint(pipeline, exc) from None  # one error, its fix in Dagster terms
    finally:
        source.disconnect()
    _record_source_schemas(context, specs, schemas)
    context.log.info(f"batch {batch_id}: {manifest.rows} changes from {manifest.start} to {manifest.end}")
    return dg.MaterializeResult(asset_key=specs.changes_key,
                                metadata=capture_metadata(manifest, lag, time.monotonic() - began))


def _record_source_schemas(context: dg.AssetExecutionContext, specs: PipelineSpecs, schemas) -> None:
    """The source tables' column schemas, recorded on their (external) assets when they changed."""
    for event in source_schema_events(specs.source_keys, schemas, context.instance):
        context.log_event(event)


def _with_resync_hint(pipeline: PipelineConfig, exc: TableChangedError) -> TableChangedError:
    """The same error, its fix spelled out in Dagster terms: the re-sync job of this pipeline for that table."""
    fix = (f"{exc.fix}; in Dagster: launch the job {resync_job_name(pipeline.name)} (it runs the setup) with run "
           f"config tables: [{exc.table}], then re-run this partition (docs/operations.md, 'A re-created table')")
    return TableChangedError(exc.table, exc.detail, fix)


def _capture_snapshot(context: dg.AssetExecutionContext, specs: PipelineSpecs, resource) -> dg.MaterializeResult:
    """A snapshot batch: its planned chunks read into the change log; the checkpoint does not move."""
    pipeline = specs.pipeline
    changelog = resource.open_changelog()
    batch_id = context.partition_key
    began = time.monotonic()
    source = resource.connect_source()
    try:
        manifest = capture_snapshot_batch(source, changelog, pipeline.name, batch_id, pipeline.snapshot_settings())
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
            specs.sinks[(sink, table)].replace_attributes(deps=[]), is_required=False)
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
    )
    def apply(context: dg.AssetExecutionContext):
        resource = getattr(context.resources, key)
        changelog = resource.open_changelog()
        batch_id = context.partition_key
        manifest = changelog.manifest(pipeline.name, batch_id)
        if manifest is None:
            raise ChangeLogError(
                f"batch {batch_id} is not in the change log (never captured, or pruned by retention); "
                f"re-sync the table instead of re-applying this batch"
            )
        selected = sorted(tables[k] for k in context.selected_asset_keys)
        target = resource.connect_sink(sink)
        failed: dict[str, Exception] = {}
        try:
            for table in selected:
                try:
                    metadata = _apply_table(changelog, target, specs, manifest, table, context.log)
                except TransientError:
                    raise  # the sink itself is gone: every other table would fail the same way; retried whole
                except Exception as exc:  # noqa: BLE001 - one table's failure must not stop the others
                    failed[table] = exc
                    context.log.error(f"sink {sink}: table {table} failed to apply batch {batch_id}: {exc}")
                    continue
                yield dg.MaterializeResult(asset_key=specs.sink_key(sink, table), metadata=metadata)
        finally:
            target.disconnect()
        if failed:
            raise _tables_failed(sink, batch_id, selected, failed)

    return apply


def _apply_table(changelog: ChangeLog, target, specs: PipelineSpecs, manifest: BatchManifest, table: str,
                 log) -> dict:
    """Apply one table's changes of the batch to the sink; its materialization metadata: what the batch did,
    then the table as the sink now holds it (Dagster's standard table metadata, see ``metadata.py``)."""
    entry = manifest.tables.get(table)
    if entry is None:
        metadata: dict[str, object] = {"dbmazz/batch": manifest.batch_id, "rows_written": 0, PARTITION_ROW_COUNT: 0}
    else:
        result = apply_batch(changelog, target, specs.pipeline.name, manifest.batch_id, tables=[table])[table]
        metadata = _apply_metadata(manifest.batch_id, result, entry)
    table_md = _sink_table_metadata(target, specs, table, entry, log)
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


def _tables_failed(sink: str, batch_id: str, selected: list[str], failed: dict[str, Exception]) -> SinkError:
    """One error naming every table that failed and why; the other tables of the batch were applied."""
    reasons = "; ".join(f"{table}: {type(exc).__name__}: {exc}" for table, exc in failed.items())
    applied = len(selected) - len(failed)
    error = SinkError(
        f"sink {sink}: {len(failed)} of {len(selected)} tables failed to apply batch {batch_id} ({reasons}); "
        f"the other {applied} were applied",
        hint="fix the cause named for each table, then re-run this partition (applied tables are skipped)",
    )
    error.__cause__ = next(iter(failed.values()))
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
        metadata["newest_source_commit"] = datetime.fromtimestamp(entry.max_commit_ts_us / 1e6, UTC).isoformat()
        metadata["commit_to_visible_seconds"] = round((now_us - entry.max_commit_ts_us) / 1e6, 3)
    metadata.update({f"details/{k}": v for k, v in result.details.items()})
    return metadata


def position_of(metadata: dict) -> SourcePosition | None:
    """The ``dbmazz/to`` position recorded in a capture materialization's metadata."""
    value = metadata.get("dbmazz/to_position")
    if value is None:
        return None
    return position_from_dict(value.value if hasattr(value, "value") else value)
