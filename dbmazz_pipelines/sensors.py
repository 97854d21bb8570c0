"""The capture sensor: a cheap poll of the source that launches one batch at a time, log or snapshot.

Each tick it may plan the next log batch (checkpoint, current position] and it may pick the next
snapshot batch (an initial load, a table added to the configuration, a re-sync); when both are
ready it takes turns (the cursor remembers which kind ran last), so a long snapshot never starves
live changes and live changes never starve a snapshot.
"""

from __future__ import annotations

import json
import time

import dagster as dg

from dbmazz_connectors.config import PipelineConfig
from dbmazz_connectors.core import DbmazzError
from dbmazz_connectors.engine import batch_id_for, bounded_end, set_up_source
from dbmazz_connectors.snapshots import is_snapshot_batch, plans

from .assets import position_of
from .freshness import caught_up, finish_restatement, report_current
from .naming import (
    KIND_TAG,
    PIPELINE_TAG,
    batch_partitions,
    job_name,
    resource_key,
    resync_job_name,
    sensor_name,
)
from .operations import observe, report_advance
from .retention import prune
from .snapshot_batches import next_snapshot_batch, plan_missing_loads, snapshot_run_tags
from .stream import stream_job_name
from .translator import PipelineSpecs

__all__ = ["build_capture_sensor", "IN_FLIGHT", "next_log_range", "starting_checkpoint"]

STREAM_BACKOFF_SECONDS = 60

IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def _run_in_flight(instance: dg.DagsterInstance, pipeline: str) -> dg.RunRecord | None:
    """A queued or running batch, streaming or re-sync run of the pipeline."""
    for name in (job_name(pipeline), stream_job_name(pipeline), resync_job_name(pipeline)):
        records = instance.get_run_records(dg.RunsFilter(job_name=name, statuses=IN_FLIGHT), limit=1)
        if records:
            return records[0]
    return None


def _materialized_checkpoint(instance: dg.DagsterInstance, changes: dg.AssetKey, log_partitions: list[str]):
    """The furthest ``dbmazz/to`` Dagster recorded for the newest log batches (snapshot batches carry none)."""
    if not log_partitions:
        return None
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(changes, asset_partitions=log_partitions[-5:]), limit=5
    ).records
    positions = [
        position_of(dict(r.asset_materialization.metadata)) for r in records if r.asset_materialization
    ]
    positions = [p for p in positions if p is not None]
    return max(positions, key=lambda p: p.version) if positions else None


def build_capture_sensor(specs: PipelineSpecs, job, stream_job=None) -> dg.SensorDefinition:
    pipeline = specs.pipeline
    key = resource_key(pipeline.name)
    partitions_def = batch_partitions(pipeline.name)

    @dg.sensor(
        name=sensor_name(pipeline.name),
        jobs=[job, stream_job] if stream_job is not None else [job],
        minimum_interval_seconds=pipeline.poll_interval_seconds,
        required_resource_keys={key},
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"polls the source of pipeline {pipeline.name}; launches one log or snapshot batch at a time",
    )
    def capture_sensor(context: dg.SensorEvaluationContext):
        in_flight = _run_in_flight(context.instance, pipeline.name)
        if in_flight is not None:
            return dg.SkipReason(
                f"a run of {pipeline.name} is in flight (run {in_flight.dagster_run.run_id[:8]})"
            )
        resource = getattr(context.resources, key)
        changelog = resource.open_changelog()
        partitions = sorted(context.instance.get_dynamic_partitions(partitions_def.name))
        source = resource.connect_source()
        try:
            return _evaluate(context, specs, source, changelog, partitions, partitions_def)
        finally:
            source.disconnect()

    return capture_sensor


def _evaluate(context, specs: PipelineSpecs, source, changelog, partitions, partitions_def):
    pipeline = specs.pipeline
    log_partitions = [p for p in partitions if not is_snapshot_batch(p)]
    checkpoint, set_up = starting_checkpoint(context, specs, source, changelog, log_partitions)
    for key in specs.sink_keys:  # a re-run killed before restating a table's latest update (freshness.py)
        finish_restatement(context.instance, key, context.log)
    obsolete = _obsolete_log_batch(context, pipeline, changelog, checkpoint, log_partitions)
    if obsolete is not None:
        log_partitions.remove(obsolete)
        partitions = [p for p in partitions if p != obsolete]
    plan = plan_missing_loads(source, changelog, pipeline, set_up=not set_up)
    added = plan.batch_ids() if plan is not None else []
    if plan is not None:
        context.log.info(
            f"{pipeline.name}: planned snapshot {plan.snapshot_id} ({plan.reason}) of "
            f"{', '.join(plan.tables)}: {len(added)} batches"
        )
        observe(
            context.instance,
            specs.changes_key,
            "snapshot planned",
            f"planned snapshot {plan.snapshot_id} ({plan.reason}) of {', '.join(plan.tables)}: {len(added)} "
            "batches, run by the batch job",
            {
                "dbmazz/snapshot": plan.snapshot_id,
                "reason": plan.reason,
                "tables": dg.MetadataValue.json(list(plan.tables)),
                "batches": len(added),
                "dbmazz/floor": str(plan.floor),
            },
        )
    log_range, checkpoint, idle = _next_log_range(
        context, specs, source, changelog, checkpoint, log_partitions
    )
    snapshot = next_snapshot_batch(
        context.instance, pipeline.name, changelog, partitions + added, specs.changes_key
    )
    # run_mode: stream keeps a streaming run alive, idle or not (the first commit after a quiet spell is seen
    # within a second, not after a tick and a run's start), except to let waiting snapshot batches run while
    # there is nothing to capture; a streaming run captures a planned, uncaptured batch first
    streaming = pipeline.run_mode == "stream"
    log_ready = isinstance(log_range, tuple) or (streaming and snapshot.batch_id is None)
    kind = _choose(log_ready, snapshot.batch_id is not None, context.cursor)
    requests = [partitions_def.build_add_request(added)] if added else []
    if obsolete is not None:
        requests.append(partitions_def.build_delete_request([obsolete]))
    if kind is None:
        if idle and not snapshot.failed:
            _report_current(context, specs, checkpoint, log_partitions)
        reason = _skip_reason(pipeline, log_range, snapshot.failed)
        return (
            dg.SensorResult(skip_reason=reason, dynamic_partitions_requests=requests)
            if requests
            else dg.SkipReason(reason)
        )
    if kind == "cdc" and streaming:
        return _start_stream(context, pipeline, requests)
    if kind == "cdc":
        batch_id, tags = _plan_log_batch(pipeline, changelog, *log_range)
        requests.append(partitions_def.build_add_request([batch_id]))
    else:
        batch_id, tags = snapshot.batch_id, snapshot_run_tags(snapshot.batch_id)
    pruned = prune(context.instance, specs, changelog, partitions)
    if pruned:
        requests.append(partitions_def.build_delete_request(pruned))
    run = dg.RunRequest(
        job_name=job_name(pipeline.name),
        partition_key=batch_id,
        run_key=batch_id,
        tags={PIPELINE_TAG: pipeline.name, **tags},
    )
    return dg.SensorResult(
        run_requests=[run], dynamic_partitions_requests=requests, cursor=json.dumps({"last": kind})
    )


def _start_stream(context, pipeline: PipelineConfig, requests: list):
    """A streaming run (``run_mode: stream``) instead of one batch run; after two streaming runs in a row that
    failed within STREAM_BACKOFF_SECONDS of their start, the next waits STREAM_BACKOFF_SECONDS after the last (a
    cause that persists fills no Runs page; a run that streamed for long and failed at its end does not count)."""
    records = context.instance.get_run_records(
        dg.RunsFilter(job_name=stream_job_name(pipeline.name)), limit=2
    )
    failed = [r for r in records if r.dagster_run.status == dg.DagsterRunStatus.FAILURE and _short(r)]
    if len(records) == 2 and len(failed) == 2:
        ended = failed[0].end_time or failed[0].update_timestamp.timestamp()
        wait = ended + STREAM_BACKOFF_SECONDS - time.time()
        if wait > 0:
            reason = (
                f"the last two streaming runs of {pipeline.name} failed (run {failed[0].dagster_run.run_id[:8]}"
                f"); the next starts in {wait:.0f}s"
            )
            return (
                dg.SensorResult(skip_reason=reason, dynamic_partitions_requests=requests)
                if requests
                else dg.SkipReason(reason)
            )
    run = dg.RunRequest(
        job_name=stream_job_name(pipeline.name), tags={PIPELINE_TAG: pipeline.name, KIND_TAG: "stream"}
    )
    return dg.SensorResult(
        run_requests=[run], dynamic_partitions_requests=requests, cursor=json.dumps({"last": "cdc"})
    )


def _short(record: dg.RunRecord) -> bool:
    if record.start_time is None or record.end_time is None:
        return True  # never started, or killed: its end is when it was marked failed
    return record.end_time - record.start_time < STREAM_BACKOFF_SECONDS


def _plan_log_batch(pipeline: PipelineConfig, changelog, start, end) -> tuple[str, dict[str, str]]:
    """Record the range of the next log batch (so every run of it reads exactly that range); its id and run tags."""
    batch_id = batch_id_for(start, end)
    changelog.write_plan(pipeline.name, batch_id, start, end)
    return batch_id, {KIND_TAG: "cdc", "dbmazz/from": str(start), "dbmazz/to": str(end)}


def _obsolete_log_batch(context, pipeline: PipelineConfig, changelog, checkpoint, log_partitions: list[str]):
    """The newest log batch, if it was never captured and the checkpoint moved past its start (a restart after
    a lost log, whose range no longer exists in the source): removed from the change log and the UI."""
    if not log_partitions or changelog.manifest(pipeline.name, log_partitions[-1]) is not None:
        return None
    planned = changelog.plan(pipeline.name, log_partitions[-1])
    if planned is None or planned[0].version >= checkpoint.version:
        return None
    changelog.delete_batch(pipeline.name, log_partitions[-1])
    context.log.warning(
        f"{pipeline.name}: batch {log_partitions[-1]} starts before the checkpoint {checkpoint} "
        "(its range was lost in the source and re-synced); removed"
    )
    return log_partitions[-1]


def _choose(log_ready: bool, snapshot_ready: bool, cursor: str | None) -> str | None:
    """Which kind of batch runs now: the ready one, or when both are, the one that did not run last."""
    if log_ready and snapshot_ready:
        last = json.loads(cursor).get("last") if cursor else None
        return "snapshot" if last == "cdc" else "cdc"
    if log_ready:
        return "cdc"
    return "snapshot" if snapshot_ready else None


def _skip_reason(pipeline: PipelineConfig, log_reason: str, failed: tuple[str, ...]) -> str:
    if not failed:
        return log_reason
    shown = ", ".join(failed[:3]) + (f" and {len(failed) - 3} more" if len(failed) > 3 else "")
    return (
        f"{log_reason}; snapshot batches waiting for a re-run: {shown} (re-run their partitions, e.g. a backfill "
        f"of the failed partitions of {job_name(pipeline.name)})"
    )


def _next_log_range(context, specs: PipelineSpecs, source, changelog, checkpoint, log_partitions: list[str]):
    """``(range or why there is none, checkpoint, idle)``: the range (checkpoint, current] to capture next, or
    why there is none (a string); the checkpoint (moved by an idle advance); whether the source has nothing
    newer for the pipeline (not a planned batch waiting for its capture)."""
    pipeline = specs.pipeline
    if log_partitions and changelog.manifest(pipeline.name, log_partitions[-1]) is None:
        return (
            (
                f"batch {log_partitions[-1]} has not been captured yet; re-run its partition of "
                f"{pipeline.name}/changes (nothing newer is planned until it succeeds)"
            ),
            checkpoint,
            False,
        )

    def advanced(start, end) -> None:
        report_advance(context.instance, f"{pipeline.name}@{changelog.root}", specs.changes_key, start, end)

    found, checkpoint, reason = next_log_range(pipeline, source, changelog, checkpoint, on_advance=advanced)
    return (found, checkpoint, False) if found is not None else (reason, checkpoint, True)


def _report_current(context, specs: PipelineSpecs, checkpoint, log_partitions: list[str]) -> None:
    """Idle: each sink table that applied the newest captured batch is recorded current (``freshness.py``)."""
    newest = log_partitions[-1] if log_partitions else None
    for key in specs.sink_keys:
        if caught_up(context.instance, key, newest):
            report_current(context.instance, specs.pipeline, key, str(checkpoint))


def next_log_range(pipeline: PipelineConfig, source, changelog, checkpoint, on_advance=None):
    """``(range, checkpoint, reason)``: the range (checkpoint, current] to capture next, or None and why not;
    the checkpoint, moved to the current position when the source holds nothing of the pipeline's tables up
    to it (recorded, then the source acknowledged, then ``on_advance(from, to)``). The sensor's planning, also
    a streaming run's."""
    current = source.current_position()
    if current.version <= checkpoint.version:
        return None, checkpoint, f"{pipeline.name} is idle at {checkpoint}"
    pending = getattr(source, "pending_changes", None)
    if pending is not None and not pending(checkpoint, current):
        changelog.record_idle_checkpoint(pipeline.name, current)  # recorded first, then acknowledged
        source.checkpoint(current)
        if on_advance is not None:
            on_advance(checkpoint, current)
        return (
            None,
            current,
            f"nothing of {pipeline.name}'s tables up to {current}; source acknowledged to it",
        )
    return (checkpoint, bounded_end(checkpoint, current, pipeline.max_batch_bytes)), checkpoint, ""


def starting_checkpoint(context, specs: PipelineSpecs, source, changelog, log_partitions: list[str]):
    """The pipeline's checkpoint, cross-checked with Dagster's record and the source's own; and whether the
    source was set up for the first time on this tick."""
    pipeline = specs.pipeline
    checkpoint = changelog.checkpoint(pipeline.name)
    recorded = _materialized_checkpoint(context.instance, specs.changes_key, log_partitions)
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
        observe(
            context.instance,
            specs.changes_key,
            "source set up",
            f"set up the source of {pipeline.name} (its replication slot or binlog position, and publication "
            f"where the source has one, for {', '.join(pipeline.tables)}); capture starts after {checkpoint}",
            {"dbmazz/to": str(checkpoint), "tables": dg.MetadataValue.json(list(pipeline.tables))},
        )
        return checkpoint, True
    if acknowledged is not None and acknowledged.version > checkpoint.version:
        return _past_lost_range(context, pipeline, changelog, checkpoint, acknowledged), False
    if acknowledged is not None and acknowledged.version < checkpoint.version:
        source.checkpoint(checkpoint)  # a capture staged its batch but died before acknowledging it
    return checkpoint, False


def _past_lost_range(context, pipeline: PipelineConfig, changelog, checkpoint, acknowledged):
    """The source acknowledged past the checkpoint (a new slot, something else consumed it): the changes in
    between are lost. A whole-table snapshot of every table planned at or after ``acknowledged`` holds them
    (docs/architecture.md, "Snapshots"), so capture may go on from there; otherwise nothing is captured."""
    snapshotted = {
        t
        for plan in plans(changelog, pipeline.name)
        if plan.sweep and plan.floor.version >= acknowledged.version
        for t in plan.tables
    }
    if not set(pipeline.tables) <= snapshotted:
        raise DbmazzError(
            f"the source acknowledged {acknowledged}, past the pipeline's checkpoint {checkpoint}: "
            "changes in between were consumed by something else and are lost",
            hint=f"re-sync every table of the pipeline: launch the job {resync_job_name(pipeline.name)} with "
            "no tables given (docs/operations.md, 'Recovering')",
        )
    changelog.record_idle_checkpoint(pipeline.name, acknowledged)
    context.log.warning(
        f"{pipeline.name}: changes in ({checkpoint}, {acknowledged}] were lost in the source; "
        "every table's re-sync covers them, capture goes on after " + str(acknowledged)
    )
    return acknowledged
