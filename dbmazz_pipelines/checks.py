"""Asset checks per sink table: row-count parity with the source, freshness, and whether its initial load is complete."""

import dagster as dg
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from dbmazz_connectors.snapshots import plans

from .freshness import CURRENT_AT, RESTATED, now
from .naming import TABLE_METADATA, batch_partitions, resource_key, table_identifier
from .parity import compare_counts
from .snapshot_batches import _needed_batches, load_progress
from .translator import PipelineSpecs

__all__ = ["build_sink_checks", "cheap_evaluations", "CHEAP_CHECKS"]

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
    """Source and sink counts compared at one position (``parity.py``): fails on rows the sink lost or gained,
    never on lag."""
    pipeline = specs.pipeline
    resource = getattr(context.resources, resource_key(pipeline.name))
    changelog = resource.open_changelog()
    loading = _snapshot_in_progress(context.instance, changelog, specs, sink, table)
    if loading:
        return _not_compared(f"not compared: {loading} of the table is being applied")
    target = resource.connect_sink(sink)
    try:
        high_water = target.high_water_version(table)
        sink_rows = target.row_count(table)
        moved = target.high_water_version(table) != high_water
    finally:
        target.disconnect()
    if high_water is None or moved:
        return _not_compared(
            "not compared: "
            + (
                "nothing applied to the sink table yet"
                if high_water is None
                else "the sink applied a batch while it was counted"
            )
        )
    source = resource.connect_source()
    try:
        p0 = source.current_position().version
        source_rows = source.row_count(table)
        p1 = source.current_position().version
    finally:
        source.disconnect()

    def partitions() -> list[str]:
        return context.instance.get_dynamic_partitions(batch_partitions(pipeline.name).name)

    def captured_to() -> int:
        checkpoint = changelog.checkpoint(pipeline.name)
        return checkpoint.version if checkpoint is not None else 0

    outcome = compare_counts(
        changelog=changelog,
        pipeline=pipeline.name,
        table=table,
        partitions=partitions,
        sink_rows=sink_rows,
        high_water=high_water,
        source_rows=source_rows,
        p0=p0,
        p1=p1,
        captured_to=captured_to,
        wait_seconds=_parity_wait(pipeline),
    )
    if outcome.passed is None:
        return _not_compared(outcome.reason, outcome.metadata)
    return dg.AssetCheckResult(
        passed=outcome.passed,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={**outcome.metadata, "verdict": "equal" if outcome.passed else "differ"},
        description=outcome.reason,
    )


def _parity_wait(pipeline) -> float:
    """How long parity waits for capture to pass the source's count: a few of the sensor's intervals."""
    return float(max(30, 6 * pipeline.poll_interval_seconds))


def _not_compared(reason: str, metadata: dict | None = None) -> dg.AssetCheckResult:
    """Parity that could not compare: not a failure (lag is not damage), said in its description."""
    return dg.AssetCheckResult(
        passed=True,
        severity=dg.AssetCheckSeverity.WARN,
        description=reason,
        metadata={**(metadata or {}), "verdict": "not compared"},
    )


def _snapshot_in_progress(instance, changelog, specs: PipelineSpecs, sink: str, table: str) -> str | None:
    """A snapshot of the table (initial load, re-sync) not yet wholly applied to this sink table: its rows are
    not changes of the log, so counts cannot be carried over them."""
    applied = None
    for plan in plans(changelog, specs.pipeline.name):
        if table not in plan.tables:
            continue
        if applied is None:
            applied = set(instance.get_materialized_partitions(specs.sink_key(sink, table)))
        if not set(_needed_batches(plan, table)) <= applied:
            return f"snapshot {plan.snapshot_id} ({plan.reason})"
    return None


def _freshness(context, specs: PipelineSpecs, sink: str, table: str) -> dg.AssetCheckResult:
    """What the sink table's Dagster freshness policy reads -- its latest materialization, the time it was last
    known current (``freshness.py``: an idle, current table is recorded again; a replay does not count) --
    against the pipeline's windows: a warning past ``freshness_warn_seconds``, an error past
    ``freshness_fail_seconds``."""
    pipeline = specs.pipeline
    instance = context.instance
    captured, _ = _latest_batch(instance, specs.changes_key)
    last = instance.get_latest_materialization_event(specs.sink_key(sink, table))
    applied = (
        last.asset_materialization.partition if last is not None and last.asset_materialization else None
    )
    warn, fail = pipeline.freshness_warn_seconds, pipeline.freshness_fail_seconds
    metadata: dict = {
        "latest_captured_batch": captured or "",
        "latest_applied_batch": applied or "",
        "warn_after_seconds": warn,
        "fail_after_seconds": fail,
    }
    if last is None or last.asset_materialization is None:
        return dg.AssetCheckResult(
            passed=False,
            severity=dg.AssetCheckSeverity.WARN,
            metadata=metadata,
            description="nothing applied to the sink table yet",
        )
    age = round(now() - last.timestamp, 1)
    recorded = last.asset_materialization.metadata
    current_at = recorded.get(CURRENT_AT)
    metadata.update(
        {
            "last_updated": dg.MetadataValue.timestamp(last.timestamp),
            "seconds_since_update": age,
            **({"current_at": current_at.value} if current_at is not None else {}),
            **({"restated": recorded[RESTATED].value} if RESTATED in recorded else {}),
        }
    )
    since = f"last known current {age:.0f} s ago (batch {applied}" + (
        f", source idle at {current_at.value})" if current_at is not None else ")"
    )
    if not fail:
        return dg.AssetCheckResult(
            passed=True,
            metadata=metadata,
            description=f"{since}; no freshness policy (freshness_fail_seconds: 0)",
        )
    if age >= fail:
        return dg.AssetCheckResult(
            passed=False,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata=metadata,
            description=f"{since}: past freshness_fail_seconds ({fail} s)",
        )
    if warn and age >= warn:
        return dg.AssetCheckResult(
            passed=False,
            severity=dg.AssetCheckSeverity.WARN,
            metadata=metadata,
            description=f"{since}: past freshness_warn_seconds ({warn} s)",
        )
    return dg.AssetCheckResult(passed=True, metadata=metadata, description=since)


def _initial_load(
    context, specs: PipelineSpecs, sink: str, table: str, changelog=None
) -> dg.AssetCheckResult:
    """Passes once every batch of a whole-table snapshot of the table (its initial load, or a later full
    re-sync) is applied to this sink table; until then it reports the progress."""
    pipeline = specs.pipeline
    if changelog is None:
        changelog = getattr(context.resources, resource_key(pipeline.name)).open_changelog()
    progress = load_progress(context.instance, changelog, pipeline.name, table, specs.sink_key(sink, table))
    if progress is None:
        return dg.AssetCheckResult(
            passed=False,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"progress": "no snapshot planned"},
            description="no initial load planned yet: the capture sensor plans it when it sets the source up or "
            "finds the table in the configuration (is the sensor running?)",
        )
    plan = progress.plan
    return dg.AssetCheckResult(
        passed=progress.complete,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "snapshot": plan.snapshot_id,
            "reason": plan.reason,
            "progress": f"{progress.applied} of {progress.needed} batches",
            "batches_applied": progress.applied,
            "batches": progress.needed,
        },
        description=(
            f"{plan.reason} complete"
            if progress.complete
            else f"{plan.reason} in progress: {progress.applied} of {progress.needed} batches applied "
            "(a failed batch waits for a re-run of its partition)"
        ),
    )


def build_sink_checks(specs: PipelineSpecs) -> list[dg.AssetChecksDefinition]:
    pipeline = specs.pipeline
    checks = []
    for sink in pipeline.sinks:
        for table in pipeline.tables:
            asset = specs.sink_key(sink, table)
            checks.append(
                _make_check(
                    specs,
                    sink,
                    table,
                    asset,
                    "row_count_parity",
                    _parity,
                    "the sink's row count equals the source's at the same position "
                    "(carried over the captured changes it has not applied yet)",
                    expensive=True,
                )
            )
            checks.append(
                _make_check(
                    specs,
                    sink,
                    table,
                    asset,
                    "freshness",
                    _freshness,
                    "the sink table was known current within freshness_warn_seconds (warning) "
                    "and freshness_fail_seconds (error): what its freshness policy reads",
                )
            )
            checks.append(
                _make_check(
                    specs,
                    sink,
                    table,
                    asset,
                    "initial_load",
                    _initial_load,
                    "every batch of the table's initial load (a whole-table snapshot) is applied",
                )
            )
    return checks


def _make_check(specs, sink, table, asset, name, body, description, expensive=False):
    pipeline = specs.pipeline

    # an explicit op name: Dagster's default is built from the asset key, which two tables may share once
    # cleaned (public.a_b, public_a.b) and which is not a valid name for a table with a space
    @dg.multi_asset_check(
        specs=[
            dg.AssetCheckSpec(name, asset=asset, description=description, metadata={TABLE_METADATA: table})
        ],
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


CHEAP_CHECKS = {"freshness": _freshness, "initial_load": _initial_load}  # evaluated by streaming runs too


def cheap_evaluations(context, specs: PipelineSpecs) -> list[dg.AssetCheckEvaluation]:
    """The freshness and initial-load checks of every sink table, as evaluations a run can log (a streaming run
    does, every few seconds: an evaluation in the run that records the latest materialization stays shown as
    the check's result for it, where the scheduled checks job's would read "not evaluated" after the next
    batch). ``context``: anything with ``instance`` and the pipeline's resource in ``resources``."""
    evaluations = []
    changelog = _PlansReadOnce(getattr(context.resources, resource_key(specs.pipeline.name)).open_changelog())
    for sink in specs.pipeline.sinks:
        for table in specs.pipeline.tables:
            key = specs.sink_key(sink, table)
            for name in CHEAP_CHECKS:
                result = (
                    _freshness(context, specs, sink, table)
                    if name == "freshness"
                    else _initial_load(context, specs, sink, table, changelog)
                )
                evaluations.append(
                    dg.AssetCheckEvaluation(
                        asset_key=key,
                        check_name=name,
                        passed=result.passed,
                        severity=result.severity,
                        metadata=result.metadata,
                        description=result.description,
                    )
                )
    return evaluations


class _PlansReadOnce:
    """The change log, its snapshot plans read once for every table's initial-load check (a listing and one
    object per plan, on an object store requests)."""

    def __init__(self, changelog) -> None:
        self._changelog = changelog
        self._plans: dict = {}

    def snapshot_plans(self, pipeline: str):
        if pipeline not in self._plans:
            self._plans[pipeline] = self._changelog.snapshot_plans(pipeline)
        return self._plans[pipeline]

    def __getattr__(self, name):
        return getattr(self._changelog, name)


PARITY = "row_count_parity"
CARRIED_FROM = "dbmazz/evaluated_in_run"


def carried_parity(context, specs: PipelineSpecs, carried: set) -> list[dg.AssetCheckEvaluation]:
    """The latest ``row_count_parity`` result of each sink table, evaluated by another run (the checks job),
    as an evaluation of this run (a streaming run), once per result (``carried``: those already carried). Parity
    waits for capture and counts the source, so the streaming run does not compare itself; carrying the checks
    job's latest outcome keeps it shown for the batches this run records, saying where it was compared."""
    instance = context.instance
    evaluations = []
    for key in specs.sink_keys:
        history = instance.event_log_storage.get_asset_check_execution_history(
            dg.AssetCheckKey(key, PARITY), limit=1
        )
        record = history[0] if history else None
        if record is None or record.run_id == context.run.run_id or record.event is None:
            continue
        done = (AssetCheckExecutionRecordStatus.SUCCEEDED, AssetCheckExecutionRecordStatus.FAILED)
        if record.status not in done or (record.id, record.event.timestamp) in carried:
            continue
        carried.add((record.id, record.event.timestamp))
        evaluation = record.evaluation
        assert evaluation is not None
        origin = evaluation.metadata.get(CARRIED_FROM)
        evaluations.append(
            dg.AssetCheckEvaluation(
                asset_key=key,
                check_name=PARITY,
                passed=evaluation.passed,
                severity=evaluation.severity,
                description=evaluation.description,
                metadata={
                    **evaluation.metadata,
                    CARRIED_FROM: origin.value if origin is not None else record.run_id,
                    "dbmazz/evaluated_at": dg.MetadataValue.timestamp(record.event.timestamp),
                },
            )
        )
    return evaluations
