"""The capture sensor: a cheap poll of the source that plans at most one batch at a time (DESIGN §3)."""


import dagster as dg

from dbmazz_connectors.config import PipelineConfig
from dbmazz_connectors.core import DbmazzError
from dbmazz_connectors.engine import batch_id_for, set_up_source

from .assets import position_of
from .naming import PIPELINE_TAG, batch_partitions, changes_key, job_name, resource_key, sensor_name, sink_key

__all__ = ["build_capture_sensor", "IN_FLIGHT"]

IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def _run_in_flight(instance: dg.DagsterInstance, pipeline: str) -> dg.RunRecord | None:
    records = instance.get_run_records(
        dg.RunsFilter(job_name=job_name(pipeline), statuses=IN_FLIGHT), limit=1
    )
    return records[0] if records else None


def _materialized_checkpoint(instance: dg.DagsterInstance, pipeline: str):
    event = instance.get_latest_materialization_event(changes_key(pipeline))
    if event is None or event.asset_materialization is None:
        return None
    return position_of(dict(event.asset_materialization.metadata))


def _prune(context, pipeline: PipelineConfig, changelog, partitions: list[str]) -> list[str]:
    """Batches past retention that every sink table has applied: dropped from the change log and the UI."""
    excess = len(partitions) - pipeline.retention_batches
    if excess <= 0:
        return []
    applied = None
    for sink in pipeline.sinks:
        for table in pipeline.tables:
            done = context.instance.get_materialized_partitions(sink_key(pipeline.name, sink, table))
            applied = set(done) if applied is None else applied & set(done)
    prunable = [p for p in partitions[:excess] if p in (applied or set())]
    for batch_id in prunable:
        changelog.delete_batch(pipeline.name, batch_id)
    return prunable


def build_capture_sensor(pipeline: PipelineConfig, job) -> dg.SensorDefinition:
    key = resource_key(pipeline.name)
    partitions_def = batch_partitions(pipeline.name)

    @dg.sensor(
        name=sensor_name(pipeline.name),
        job=job,
        minimum_interval_seconds=pipeline.poll_interval_seconds,
        required_resource_keys={key},
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"polls the source of pipeline {pipeline.name} and plans one capture batch at a time",
    )
    def capture_sensor(context: dg.SensorEvaluationContext):
        in_flight = _run_in_flight(context.instance, pipeline.name)
        if in_flight is not None:
            return dg.SkipReason(f"a batch of {pipeline.name} is in flight (run {in_flight.dagster_run.run_id[:8]})")
        resource = getattr(context.resources, key)
        changelog = resource.changelog()
        partitions = sorted(context.instance.get_dynamic_partitions(partitions_def.name))
        if partitions and changelog.manifest(pipeline.name, partitions[-1]) is None:
            return dg.SkipReason(
                f"batch {partitions[-1]} has not been captured yet; re-run its partition of {pipeline.name}/changes "
                "(nothing newer is planned until it succeeds)"
            )
        source = resource.source()
        try:
            return _plan_next(context, pipeline, source, changelog, partitions, partitions_def)
        finally:
            source.disconnect()

    return capture_sensor


def _starting_checkpoint(context, pipeline: PipelineConfig, source, changelog):
    """The pipeline's checkpoint: the change log's, cross-checked with Dagster's record and the source's own."""
    checkpoint = changelog.checkpoint(pipeline.name)
    recorded = _materialized_checkpoint(context.instance, pipeline.name)
    if recorded is not None and (checkpoint is None or recorded.version > checkpoint.version):
        raise DbmazzError(
            f"the last capture recorded in Dagster ends at {recorded} but the change log {changelog.root} only "
            f"reaches {checkpoint}; the change log was moved or lost",
            hint="point the pipeline's changelog at the right root, or re-snapshot its tables",
        )
    acknowledged = source.checkpoint_position()
    if checkpoint is None:
        set_up_source(source)
        checkpoint = source.checkpoint_position() or source.current_position()
        changelog.record_idle_checkpoint(pipeline.name, checkpoint)
        context.log.info(f"{pipeline.name}: set up the source; capture starts after {checkpoint}")
        return checkpoint
    if acknowledged is not None and acknowledged.version > checkpoint.version:
        raise DbmazzError(
            f"the source acknowledged {acknowledged}, past the pipeline's checkpoint {checkpoint}: "
            "changes in between were consumed by something else and are lost",
            hint="re-snapshot the pipeline's tables (docs/operations.md, 'recovering')",
        )
    if acknowledged is not None and acknowledged.version < checkpoint.version:
        source.checkpoint(checkpoint)  # a capture staged its batch but died before acknowledging it
    return checkpoint


def _plan_next(context, pipeline: PipelineConfig, source, changelog, partitions, partitions_def):
    checkpoint = _starting_checkpoint(context, pipeline, source, changelog)
    current = source.current_position()
    if current.version <= checkpoint.version:
        return dg.SkipReason(f"{pipeline.name} is idle at {checkpoint}")
    pending = getattr(source, "pending_changes", None)
    if pending is not None and not pending(checkpoint, current):
        changelog.record_idle_checkpoint(pipeline.name, current)  # recorded first, then acknowledged
        source.checkpoint(current)
        return dg.SkipReason(f"nothing of {pipeline.name}'s tables up to {current}; source acknowledged to it")
    batch_id = batch_id_for(checkpoint, current)
    changelog.write_plan(pipeline.name, batch_id, checkpoint, current)
    pruned = _prune(context, pipeline, changelog, partitions)
    requests = [partitions_def.build_add_request([batch_id])]
    if pruned:
        requests.append(partitions_def.build_delete_request(pruned))
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                partition_key=batch_id,
                run_key=batch_id,
                tags={PIPELINE_TAG: pipeline.name, "dbmazz/from": str(checkpoint), "dbmazz/to": str(current)},
            )
        ],
        dynamic_partitions_requests=requests,
    )
