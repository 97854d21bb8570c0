"""The job ``<pipeline>_stream``: one long-lived run that captures and applies a batch every second or so.

``run_mode: stream`` is the default. A batch run costs seconds to start (a process, the code, the resources) on
top of the sensor's interval, so ``run_mode: batch`` (one run per batch, the alternative) shows a commit in the
sink ~8-15 s later. In stream mode the capture sensor starts this job instead and keeps one alive; its one op
loops for ``stream_minutes`` (then the run ends cleanly, so new code takes effect), every
``stream_interval_seconds``:

- plans the next range (checkpoint, current] exactly as the sensor plans a batch (``write_plan``, the same
  batch id) and adds it as a partition of ``<pipeline>_batches``;
- captures it with the batch run's capture code (``capture_log_batch``: same checkpoint, same acknowledgement)
  and records a materialization of ``<pipeline>/changes`` for that partition with the same metadata;
- applies it to every sink table with the apply step's code (``apply_table``) and records each sink table's
  materialization for that partition.

So the sensor's checkpoint cross-check, retention, checks, re-runs and backfills see the same partitions and
metadata as in batch mode, and the Runs page shows one streaming run per pipeline per ``stream_minutes`` (plus
the snapshot batch runs of initial loads and re-syncs). The run holds one source connection (a PostgreSQL ``capture_mode: stream`` keeps one
replication stream for the whole run) and connects each sink per batch (a DuckDB file stays readable by others
between batches).

It leaves the way (ends early, cleanly) for anything else of the pipeline: a snapshot batch ready to run
(initial load, re-sync: the sensor runs it, then starts a new streaming run) or another run of the pipeline
queued (a re-run, a re-sync job). To a run waiting for the pipeline's pool (a backfill) it hands its slot over
between two batches and takes it back after that run's step, without ending (``_lend_pool``).

Failures: a capture failure fails the run (the batch stays planned; the next streaming run captures that same
range first). A sink table that fails to apply does not stop capture or the other tables: it is retried each
iteration from its oldest unapplied batch on (in order, with a back-off); if some are still unapplied when the
run ends, the run fails naming them, and the next streaming run applies them first (it finds the captured
batches a sink table has no materialization for). A killed run is replayed the same way: batches are
idempotent (docs/architecture.md, "The ordering invariant"). The instance's ``run_retries`` do not apply to
streaming runs (``dagster/max_retries: 0``): the sensor starts the next one, with its back-off after repeated
failures; a retry besides would be a second run racing it (seen in tests/faults/test_stream_faults.py).
"""

import time
from dataclasses import dataclass, field
from typing import Any

import dagster as dg
from pydantic import Field

from dbmazz_connectors.changelog import BatchManifest, ChangeLog
from dbmazz_connectors.core import SinkError
from dbmazz_connectors.engine import batch_id_for
from dbmazz_connectors.snapshots import is_snapshot_batch

from .assets import apply_table, capture_log_batch, capture_metadata
from .naming import KIND_TAG, PIPELINE_TAG, batch_partitions, pool_name, resource_key
from .snapshot_batches import next_snapshot_batch
from .translator import PipelineSpecs

__all__ = ["build_stream_job", "stream_job_name", "StreamConfig"]

DESCRIBE_SECONDS = (
    30.0  # a sink table's columns and count(*) are read at most this often (the batch job: each batch)
)
RETRY_SECONDS = (2.0, 60.0)  # a failing sink table is retried after 2 s, doubling up to 60 s
PRUNE_EVERY = 120  # retention runs every this many iterations (and when the run ends)
LEND_POLL_SECONDS = 0.25  # while another run holds the pool lent to it, how often this run looks
# a lent slot nobody took within this is taken back (the queue passes every 1-5 s, but a loaded machine may take
# tens of seconds to launch the run: 20 s starved a test's backfill, its run refused for good)
LEND_SECONDS = 60.0
STARTING_SECONDS = 5.0  # a run started this recently may not have claimed its slot yet (as the run queue)
STARTING_STATUSES = [
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]
CHECK_EVERY_SECONDS = 10.0  # idle tables recorded current, freshness and initial-load checks evaluated


def stream_job_name(pipeline: str) -> str:
    return f"{pipeline}_stream"


class StreamConfig(dg.Config):
    """Run config of a streaming run; the defaults come from the pipeline's settings."""

    max_seconds: float | None = Field(
        None, description="end after this many seconds (default: stream_minutes)"
    )
    stop_when_idle: bool = Field(False, description="end as soon as every change is captured and applied")


@dataclass
class _TableState:
    """A sink table's batches captured and not applied yet (in source order), and when to try again."""

    unapplied: list[str] = field(default_factory=list)
    retry_at: float = 0.0
    backoff: float = RETRY_SECONDS[0]
    described_at: float = 0.0
    error: str | None = None


@dataclass
class _Stream:
    """What one streaming run keeps between iterations."""

    checkpoint: object
    tables: dict[tuple[str, str], _TableState]
    manifests: dict[str, BatchManifest] = field(default_factory=dict)
    snapshot_parts: frozenset[str] = frozenset()
    batches: int = 0
    reported_at: float = float("-inf")  # when _report last ran (monotonic)
    carried: set = field(default_factory=set)  # parity results of the checks job this run re-recorded


def build_stream_job(specs: PipelineSpecs) -> dg.JobDefinition:
    pipeline = specs.pipeline
    key = resource_key(pipeline.name)

    @dg.op(
        name=f"{pipeline.name}__stream",
        required_resource_keys={key},
        pool=pool_name(pipeline.name),
        out=dg.Out(dg.Nothing),
    )
    def stream(context: dg.OpExecutionContext, config: StreamConfig):
        """Capture and apply a batch every stream_interval_seconds until the run's time is up."""
        seconds = config.max_seconds if config.max_seconds is not None else pipeline.stream_minutes * 60
        resource = getattr(context.resources, key)
        changelog = resource.open_changelog()
        source = resource.connect_source()
        try:
            reason, state = _loop(
                context, specs, resource, source, changelog, time.monotonic() + seconds, config.stop_when_idle
            )
        finally:
            source.disconnect()
        context.log.info(f"streaming run of {pipeline.name} ends after {state.batches} batches: {reason}")
        _fail_if_unapplied(state)
        yield dg.Output(None)

    @dg.job(
        name=stream_job_name(pipeline.name),
        executor_def=dg.in_process_executor,
        # no run_retries: the capture sensor starts the next streaming run (module doc)
        tags={
            PIPELINE_TAG: pipeline.name,
            KIND_TAG: "stream",
            "dagster/priority": "10",
            "dagster/max_retries": "0",
        },
        description=f"capture and apply {pipeline.name}'s changes every {pipeline.stream_interval_seconds:g} s "
        f"for {pipeline.stream_minutes} min (run_mode: stream); launched by its capture sensor",
    )
    def stream_job():
        stream()

    return stream_job


def _loop(
    context,
    specs: PipelineSpecs,
    resource,
    source,
    changelog: ChangeLog,
    deadline: float,
    stop_when_idle: bool,
) -> tuple[str, _Stream]:
    from .sensors import next_log_range, starting_checkpoint  # the sensor's own planning code

    pipeline = specs.pipeline
    instance = context.instance
    partitions = sorted(instance.get_dynamic_partitions(batch_partitions(pipeline.name).name))
    log_partitions = [p for p in partitions if not is_snapshot_batch(p)]
    checkpoint, _ = starting_checkpoint(context, specs, source, changelog, log_partitions)
    state = _Stream(checkpoint, _unapplied(context, specs, changelog, log_partitions))
    iteration = 0
    refused: set[str] = set()  # queued runs that did not take the lent pool
    try:
        while True:
            began = time.monotonic()
            iteration += 1
            captured = _capture_next(context, specs, source, changelog, state, log_partitions, next_log_range)
            _apply_pending(context, specs, resource, changelog, state)
            _report(context, specs, state, idle=not captured)
            if iteration % PRUNE_EVERY == 0:
                _prune(context, specs, changelog, log_partitions)
            reason = _why_stop(context, specs, changelog, state, deadline, stop_when_idle and not captured)
            if reason is None:
                reason = _lend_pool(context, specs, deadline, refused)
            if reason is not None:
                return reason, state
            time.sleep(max(0.0, pipeline.stream_interval_seconds - (time.monotonic() - began)))
    finally:
        _prune(context, specs, changelog, log_partitions)


def _capture_next(
    context,
    specs: PipelineSpecs,
    source,
    changelog: ChangeLog,
    state: _Stream,
    log_partitions: list[str],
    next_log_range,
) -> bool:
    """Plan and capture the next log batch, or capture the newest planned one a killed run left; whether
    there was one. Its partition and its materialization of ``changes`` are recorded."""
    pipeline = specs.pipeline
    if log_partitions and changelog.manifest(pipeline.name, log_partitions[-1]) is None:
        batch_id = log_partitions[-1]  # planned, never captured (a run killed mid-capture): the same range
    else:
        advanced = lambda a, b: _advanced(context, specs, changelog, a, b)  # noqa: E731
        found, state.checkpoint, _ = next_log_range(
            pipeline, source, changelog, state.checkpoint, on_advance=advanced
        )
        if found is None:
            return False
        start, end = found
        batch_id = batch_id_for(start, end)
        changelog.write_plan(pipeline.name, batch_id, start, end)
        context.instance.add_dynamic_partitions(batch_partitions(pipeline.name).name, [batch_id])
        log_partitions.append(batch_id)
    manifest, metadata = capture_log_batch(context, specs, source, changelog, batch_id)
    context.log_event(_materialization(specs.changes_key, batch_id, metadata))
    state.checkpoint = manifest.end
    state.manifests[batch_id] = manifest
    state.batches += 1
    for table_state in state.tables.values():
        table_state.unapplied.append(batch_id)
    return True


def _materialization(key: dg.AssetKey, batch_id: str, metadata: dict[str, Any]) -> dg.AssetMaterialization:
    return dg.AssetMaterialization(asset_key=key, partition=batch_id, metadata=metadata)


def _apply_pending(context, specs: PipelineSpecs, resource, changelog: ChangeLog, state: _Stream) -> None:
    """Each sink table's unapplied batches in order, each sink connected once per iteration; a table that
    fails stops there (retried later), the other tables go on."""
    now = time.monotonic()
    for sink in specs.pipeline.sinks:
        due = {
            t: s
            for (name, t), s in state.tables.items()
            if name == sink and s.unapplied and s.retry_at <= now
        }
        if not due:
            continue
        try:
            target = resource.connect_sink(sink)
        except Exception as exc:  # noqa: BLE001 - the sink is down: capture goes on, its tables wait
            for table_state in due.values():
                _failed(context, sink, "(connect)", table_state, exc)
            continue
        try:
            for table, table_state in sorted(due.items()):
                _apply_table_batches(context, specs, changelog, target, sink, table, table_state, state)
        finally:
            target.disconnect()
    for batch_id in list(state.manifests):  # manifests every table has applied are not needed any more
        if all(batch_id not in s.unapplied for s in state.tables.values()):
            del state.manifests[batch_id]


def _apply_table_batches(
    context,
    specs: PipelineSpecs,
    changelog: ChangeLog,
    target,
    sink: str,
    table: str,
    table_state: _TableState,
    state: _Stream,
) -> None:
    while table_state.unapplied:
        batch_id = table_state.unapplied[0]
        try:
            manifest = state.manifests.get(batch_id) or _manifest(changelog, specs.pipeline.name, batch_id)
            state.manifests[batch_id] = manifest
            describe = time.monotonic() - table_state.described_at >= DESCRIBE_SECONDS
            metadata = apply_table(changelog, target, specs, manifest, table, context.log, describe=describe)
        except Exception as exc:  # noqa: BLE001 - one table's failure must not stop the others
            _failed(context, sink, batch_id, table_state, exc)
            return
        if describe:
            table_state.described_at = time.monotonic()
        context.log_event(
            dg.AssetMaterialization(
                asset_key=specs.sink_key(sink, table), partition=batch_id, metadata=metadata
            )
        )
        table_state.unapplied.pop(0)
        table_state.backoff, table_state.error = RETRY_SECONDS[0], None


def _manifest(changelog: ChangeLog, pipeline: str, batch_id: str) -> BatchManifest:
    manifest = changelog.manifest(pipeline, batch_id)
    if manifest is None:
        raise SinkError(
            f"batch {batch_id} is not in the change log (pruned by retention)",
            hint="re-sync the table instead of re-applying this batch",
        )
    return manifest


def _failed(context, sink: str, batch_id: str, table_state: _TableState, exc: Exception) -> None:
    table_state.error = f"{type(exc).__name__}: {exc}"
    table_state.retry_at = time.monotonic() + table_state.backoff
    context.log.error(
        f"sink {sink}: batch {batch_id} failed to apply ({table_state.error}); "
        f"{len(table_state.unapplied)} batches wait, retried in {table_state.backoff:.0f}s"
    )
    table_state.backoff = min(RETRY_SECONDS[1], table_state.backoff * 2)


def _unapplied(
    context, specs: PipelineSpecs, changelog: ChangeLog, log_partitions: list[str]
) -> dict[tuple[str, str], _TableState]:
    """Per sink table, the captured log batches it has no materialization for (a killed or failed run's), in
    order: they are applied first. The change log says what is captured (a run killed between the capture
    and its materialization left a manifest only: its ``changes`` materialization is recorded now). Batches
    older than a table's newest materialization are left to re-runs, as in batch mode."""
    instance = context.instance
    applied = {k: instance.get_materialized_partitions(spec.key) for k, spec in specs.sinks.items()}
    newest = {
        k: max((p for p in done if not is_snapshot_batch(p)), default="") for k, done in applied.items()
    }
    oldest = min(newest.values(), default="")
    recent = [p for p in log_partitions if p > oldest]
    recorded = set(instance.get_materialized_partitions(specs.changes_key)) if recent else set()
    captured = []
    for batch_id in recent:
        manifest = changelog.manifest(specs.pipeline.name, batch_id)
        if manifest is None:
            continue
        captured.append(batch_id)
        if batch_id not in recorded:
            context.log_event(
                _materialization(specs.changes_key, batch_id, capture_metadata(manifest, None, 0.0))
            )
    return {
        k: _TableState(unapplied=[p for p in captured if p > newest[k] and p not in applied[k]])
        for k in specs.sinks
    }


def _why_stop(
    context, specs: PipelineSpecs, changelog: ChangeLog, state: _Stream, deadline: float, idle: bool
) -> str | None:
    """Why the run should end now (None: go on)."""
    if time.monotonic() >= deadline:
        return "its time is up (stream_minutes); the capture sensor starts the next one"
    if idle and not any(s.unapplied for s in state.tables.values()):
        return "every change is captured and applied (stop_when_idle)"
    queued = _queued_run_of_pipeline(context, specs)
    if queued is not None:
        return queued
    return _snapshot_ready(context, specs, changelog, state)


def _lend_pool(context, specs: PipelineSpecs, deadline: float, refused: set[str]) -> str | None:
    """Another run wants the pipeline's pool (a backfill or a re-run of the pipeline's assets): this run hands
    its slot over, waits while that run's step holds it, then takes it back and goes on; None, or why the run
    should end instead (its time is up, a run of the pipeline is queued meanwhile). A queued run that did not
    take the slot within LEND_SECONDS (held in the queue by something else) joins ``refused`` and is not waited
    for again; once started, its step waiting for a slot is.

    Ending the run instead would cost a sensor tick and a new run's start on top of the other run's step; and
    with the run queue's pool check (Dagster's default when a pool has a limit) a queued backfill run is not
    even launched while this run holds the slot, so it would wait for the end of ``stream_minutes``, and again
    behind the next streaming run (priority 10). While the slot is lent this run neither captures nor applies:
    one writer per sink table at a time, as the pool's limit of 1 says (docs/dagster.md, "Backfills")."""
    pool = pool_name(specs.pipeline.name)
    storage = context.instance.event_log_storage
    if not any(slot.run_id == context.run_id for slot in storage.get_concurrency_info(pool).claimed_slots):
        return None  # the pool has no limit, or this run holds no slot of it: nothing to hand over
    queued = _queue_holds_runs_for_pool(context.instance)
    waiting = _wanting_pool(context, pool, queued, starting=False) - refused
    if not waiting:
        return None
    step_key = context.get_step_execution_context().step.key
    priority = int(context.run.tags.get("dagster/priority", "0"))
    storage.free_concurrency_slot_for_step(context.run_id, step_key)
    context.log.info(f"hands the pool {pool} over to run {', '.join(sorted(waiting))}; takes it back after")
    began = time.monotonic()
    handed_over = False
    while True:
        time.sleep(LEND_POLL_SECONDS)
        info = storage.get_concurrency_info(pool)
        handed_over = handed_over or any(slot.run_id != context.run_id for slot in info.claimed_slots)
        # claim again once the other run holds the slot (this run is then first in line, by its priority), or
        # when nobody took it (the run was cancelled, or never got its turn within LEND_SECONDS)
        unclaimed = not handed_over and time.monotonic() - began > LEND_SECONDS
        if handed_over or unclaimed or not _wanting_pool(context, pool, queued, starting=True) - refused:
            if unclaimed:
                refused.update(waiting)
            if storage.claim_concurrency_slot(pool, context.run_id, step_key, priority).is_claimed:
                context.log.info(f"took the pool {pool} back after {time.monotonic() - began:.1f}s")
                return None
        if time.monotonic() >= deadline:
            return "its time is up (stream_minutes) while another run held the pool"
        ending = _queued_run_of_pipeline(context, specs)
        if ending is not None:
            return ending


def _queue_holds_runs_for_pool(instance: dg.DagsterInstance) -> bool:
    """Whether the run queue keeps a run queued while its first step's pool is full (Dagster's default); with
    ``op_granularity_run_buffer`` >= 1 it launches the run and its step waits for the slot instead."""
    queue = instance.get_concurrency_config().run_queue_config
    if queue is None or not queue.should_block_op_concurrency_limited_runs:
        return False
    return not queue.op_concurrency_slot_buffer


def _wanting_pool(context, pool: str, queued: bool, starting: bool) -> set[str]:
    """Short ids of the other runs that wait for ``pool``: with a step waiting for a slot; with ``queued``,
    queued (the run queue holds a run whose first step's pool is full); with ``starting``, launched but not
    running their step yet (a run started less than STARTING_SECONDS ago: a slot handed over to a queued run
    waits for it while its process starts)."""
    instance = context.instance
    now = time.time()
    waiting = {
        step.run_id
        for step in instance.event_log_storage.get_concurrency_info(pool).pending_steps
        if step.assigned_timestamp is None and step.run_id != context.run_id
    }
    statuses = ([dg.DagsterRunStatus.QUEUED] if queued else []) + (STARTING_STATUSES if starting else [])
    if not statuses:
        return {run_id[:8] for run_id in waiting}  # the run queue launches runs of a full pool: no run query
    for record in instance.get_run_records(dg.RunsFilter(statuses=statuses), limit=100):
        run = record.dagster_run
        if run.run_id == context.run_id or run.run_op_concurrency is None:
            continue
        if pool not in (run.run_op_concurrency.all_pools or ()):
            continue
        # a run that just started has not claimed yet (as the run queue counts it: a few seconds)
        if run.status != dg.DagsterRunStatus.STARTED or (record.start_time or 0) > now - STARTING_SECONDS:
            waiting.add(run.run_id)
    return {run_id[:8] for run_id in waiting}


def _queued_run_of_pipeline(context, specs: PipelineSpecs) -> str | None:
    """A queued run tagged with the pipeline (a re-sync, a re-execution): this run ends to let it go."""
    queued = context.instance.get_run_records(
        dg.RunsFilter(tags={PIPELINE_TAG: specs.pipeline.name}, statuses=[dg.DagsterRunStatus.QUEUED]),
        limit=1,
    )
    if not queued:
        return None
    return (
        f"run {queued[0].dagster_run.run_id[:8]} of the pipeline ({queued[0].dagster_run.job_name}) is queued"
    )


def _snapshot_ready(context, specs: PipelineSpecs, changelog: ChangeLog, state: _Stream) -> str | None:
    """A snapshot batch (initial load, re-sync) ready to run: it runs as a batch run, so this run ends."""
    pipeline = specs.pipeline
    partitions = sorted(context.instance.get_dynamic_partitions(batch_partitions(pipeline.name).name))
    snapshot_parts = frozenset(p for p in partitions if is_snapshot_batch(p))
    if snapshot_parts == state.snapshot_parts:
        return None  # nothing new since the last look (a failed snapshot batch waits for its re-run)
    state.snapshot_parts = snapshot_parts
    ready = next_snapshot_batch(context.instance, pipeline.name, changelog, partitions, specs.changes_key)
    if ready.batch_id is None:
        return None
    return f"snapshot batch {ready.batch_id} is ready; it runs as a batch run, then streaming goes on"


def _advanced(context, specs: PipelineSpecs, changelog: ChangeLog, start, end) -> None:
    """The source acknowledged with no batch (nothing of the tables changed): observed, at most once a minute."""
    from .operations import report_advance

    scope = f"{specs.pipeline.name}@{changelog.root}"
    report_advance(context.instance, scope, specs.changes_key, start, end, context.log_event)


def _report(context, specs: PipelineSpecs, state: _Stream, idle: bool) -> None:
    """Every CHECK_EVERY_SECONDS: when idle, each sink table that applied everything captured is recorded current
    (its freshness policy reads it, ``freshness.py``); then the freshness and initial-load checks of every sink
    table are evaluated as events of this run, so they stay shown while this run records batches, and the
    checks job's latest parity result is carried into this run likewise."""
    from .checks import carried_parity, cheap_evaluations
    from .freshness import report_current

    if time.monotonic() - state.reported_at < CHECK_EVERY_SECONDS:
        return
    state.reported_at = time.monotonic()
    if idle:
        for (sink, table), table_state in state.tables.items():
            if not table_state.unapplied:
                report_current(
                    context.instance,
                    specs.pipeline,
                    specs.sink_key(sink, table),
                    str(state.checkpoint),
                    context.log_event,
                )
    try:
        evaluations = cheap_evaluations(context, specs) + carried_parity(context, specs, state.carried)
    except Exception as exc:  # noqa: BLE001 - a check that cannot read must not stop capture
        context.log.warning(f"freshness and initial-load checks not evaluated this time: {exc}")
        return
    for evaluation in evaluations:
        context.log_event(evaluation)


def _prune(context, specs: PipelineSpecs, changelog: ChangeLog, log_partitions: list[str]) -> None:
    from .retention import prune

    partitions_def = batch_partitions(specs.pipeline.name)
    partitions = sorted(context.instance.get_dynamic_partitions(partitions_def.name))
    for batch_id in prune(context.instance, specs, changelog, partitions, context.log_event):
        context.instance.delete_dynamic_partition(partitions_def.name, batch_id)
        if batch_id in log_partitions:
            log_partitions.remove(batch_id)


def _fail_if_unapplied(state: _Stream) -> None:
    """The run fails when a sink table still has unapplied batches: the Runs page shows it, and the next
    streaming run applies them first."""
    behind = {k: s for k, s in state.tables.items() if s.unapplied}
    if not behind:
        return
    reasons = "; ".join(
        f"{sink}.{table}: {len(s.unapplied)} batches from {s.unapplied[0]} ({s.error})"
        for (sink, table), s in sorted(behind.items())
    )
    raise SinkError(
        f"the streaming run ends with sink tables behind: {reasons}",
        hint="fix the cause named; the next streaming run (started by the capture sensor) applies "
        "those batches first",
    )
