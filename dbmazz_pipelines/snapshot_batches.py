"""Snapshots in Dagster: initial loads planned by the sensor, which snapshot batch runs next, their progress.

A snapshot's batches (``snap-<id>-00000`` ... and ``snap-<id>-sweep``) are partitions of the pipeline's
batch partitions, run by its batch job like log batches (docs/operations.md, "Initial load and re-syncs").
"""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

from dbmazz_connectors.changelog import BatchManifest, ChangeLog
from dbmazz_connectors.config import PipelineConfig
from dbmazz_connectors.core.snapshot import SnapshotChunk
from dbmazz_connectors.engine import set_up_source
from dbmazz_connectors.snapshots import (
    SnapshotPlan,
    is_snapshot_batch,
    load_plan,
    plan_snapshot,
    plans,
    snapshot_of_batch,
    snapshot_progress,
)

from .naming import KIND_TAG, PARTITION_TAG, PIPELINE_TAG

__all__ = [
    "plan_missing_loads",
    "next_snapshot_batch",
    "snapshot_metadata",
    "LoadProgress",
    "load_progress",
    "describe_plan",
    "snapshot_run_tags",
    "NextSnapshotBatch",
    "SWEEP_SUFFIX",
]

SWEEP_SUFFIX = "-sweep"


def plan_missing_loads(
    source, changelog: ChangeLog, pipeline: PipelineConfig, *, set_up: bool
) -> SnapshotPlan | None:
    """Plan one snapshot of every table no whole-table snapshot covers yet; None when all are covered.

    The first plan of a pipeline is its initial load; a table added to the configuration later gets
    its own ("table added"). ``set_up``: run the (idempotent) source setup first, which adds new
    tables to the capture (the publication) so the change stream covers them before the plan's floor.
    """
    recorded = plans(changelog, pipeline.name)
    covered = {table for plan in recorded if plan.sweep for table in plan.tables}
    missing = [table for table in pipeline.tables if table not in covered]
    if not missing:
        return None
    if set_up:
        set_up_source(source)
    reason = "table added" if recorded else "initial load"
    return plan_snapshot(
        source, changelog, pipeline.name, missing, pipeline.snapshot_settings(), reason=reason
    )


@dataclass(frozen=True)
class NextSnapshotBatch:
    """The snapshot batch to run next (None: none can run now) and batches waiting for a re-run."""

    batch_id: str | None
    failed: tuple[str, ...]


def next_snapshot_batch(
    instance: dg.DagsterInstance,
    pipeline: str,
    changelog: ChangeLog,
    partitions: list[str],
    changes: dg.AssetKey,
) -> NextSnapshotBatch:
    """The oldest snapshot batch partition that is not captured and was never launched.

    A batch whose run failed is not requested again (its run key is used): it waits for a re-run or a
    backfill, and the batches after it go on. A plan's sweep runs only once every other batch of the
    plan is captured, so a whole-table re-sync never empties a sink table long before it refills it.
    """
    snapshot_parts = sorted(p for p in partitions if is_snapshot_batch(p))
    if not snapshot_parts:
        return NextSnapshotBatch(None, ())
    captured = set(instance.get_materialized_partitions(changes))
    todo = [p for p in snapshot_parts if p not in captured]
    if not todo:
        return NextSnapshotBatch(None, ())
    runs = instance.get_run_records(dg.RunsFilter(tags={PIPELINE_TAG: pipeline, PARTITION_TAG: todo}))
    launched = {r.dagster_run.tags.get(PARTITION_TAG) for r in runs}
    failed = tuple(p for p in todo if p in launched)
    for batch_id in todo:
        if batch_id in launched:
            continue
        if batch_id.endswith(SWEEP_SUFFIX) and not _chunks_captured(
            changelog, pipeline, batch_id, snapshot_parts, captured
        ):
            continue
        return NextSnapshotBatch(batch_id, failed)
    return NextSnapshotBatch(None, failed)


def _chunks_captured(
    changelog: ChangeLog, pipeline: str, sweep: str, partitions: list[str], captured: set[str]
) -> bool:
    snapshot_id = snapshot_of_batch(sweep)
    siblings = [p for p in partitions if p != sweep and snapshot_of_batch(p) == snapshot_id]
    return all(p in captured or changelog.manifest(pipeline, p) is not None for p in siblings)


def snapshot_run_tags(batch_id: str) -> dict[str, str]:
    return {KIND_TAG: "snapshot", "dbmazz/snapshot": snapshot_of_batch(batch_id) or ""}


def _position_in_plan(batch_id: str, batches: int) -> int:
    """1-based position of a batch in its plan (the sweep is the last)."""
    tail = batch_id.rsplit("-", 1)[-1]
    return batches if tail == "sweep" else int(tail) + 1


def snapshot_metadata(changelog: ChangeLog, manifest: BatchManifest, seconds: float) -> dict[str, object]:
    """What a captured snapshot batch records on ``<pipeline>/changes`` (never a checkpoint position)."""
    info = manifest.snapshot or {}
    batches = int(info.get("batches", 0))
    plan = load_plan(changelog, manifest.pipeline, info["id"])
    progress = snapshot_progress(changelog, plan)
    chunks = [SnapshotChunk.from_dict(c) for c in info.get("chunks", [])]
    return {
        "dbmazz/batch": manifest.batch_id,
        KIND_TAG: "snapshot",
        "dbmazz/snapshot": info["id"],
        "dbmazz/snapshot_reason": info.get("reason", ""),
        "dbmazz/snapshot_batch": f"{_position_in_plan(manifest.batch_id, batches)} of {batches}",
        "dbmazz/snapshot_floor": str(manifest.start),
        "snapshot_progress": f"{progress['captured']} of {progress['batches']} batches captured",
        "tables": dg.MetadataValue.json(sorted({c.table for c in chunks} or set(info.get("tables", [])))),
        "chunks": dg.MetadataValue.md(_chunks_markdown(chunks, info.get("tables", []))),
        "rows": manifest.rows,
        "rows_by_table": dg.MetadataValue.json({name: entry.rows for name, entry in manifest.tables.items()}),
        "bytes_staged": manifest.bytes,
        "duration_seconds": round(seconds, 3),
    }


def _chunks_markdown(chunks: list[SnapshotChunk], tables: list[str]) -> str:
    if not chunks:
        return (
            "sweep: rows older than the snapshot are removed from "
            + ", ".join(tables)
            + " (rows the source no longer has)"
        )
    lines = [f"| {c.table} | {c.index} | {c.key_range} |" for c in chunks]
    return "| table | chunk | primary-key range |\n|---|---|---|\n" + "\n".join(lines)


def describe_plan(plan: SnapshotPlan) -> str:
    """A plan as markdown: its batches and their chunks (the re-sync job logs and records it)."""
    lines = [
        f"snapshot {plan.snapshot_id} ({plan.reason}) of {', '.join(plan.tables)}, floor {plan.floor}",
        "",
        "| batch | table | chunk | primary-key range |",
        "|---|---|---|---|",
    ]
    for batch_id in plan.batch_ids():
        chunks = plan.chunks_of(batch_id) or ()
        lines += [f"| {batch_id} | {c.table} | {c.index} | {c.key_range} |" for c in chunks]
        if not chunks:
            lines.append(
                f"| {batch_id} | {', '.join(plan.tables)} | sweep | rows older than the snapshot go |"
            )
    return "\n".join(lines)


@dataclass(frozen=True)
class LoadProgress:
    """How far the newest (or the first complete) whole-table snapshot of a table got in one sink table."""

    plan: SnapshotPlan
    applied: int
    needed: int

    @property
    def complete(self) -> bool:
        return self.applied == self.needed


def _needed_batches(plan: SnapshotPlan, table: str) -> list[str]:
    ids = plan.batch_ids()
    needed = [ids[i] for i, chunks in enumerate(plan.batches) if any(c.table == table for c in chunks)]
    return needed + ([ids[-1]] if plan.sweep else [])


def load_progress(
    instance: dg.DagsterInstance, changelog: ChangeLog, pipeline: str, table: str, asset: dg.AssetKey
) -> LoadProgress | None:
    """The first whole-table snapshot of ``table`` whose batches ``asset`` has all applied, else the newest one.

    None when no whole-table snapshot of the table was planned.
    """
    loads = [p for p in plans(changelog, pipeline) if p.sweep and table in p.tables]
    if not loads:
        return None
    applied = set(instance.get_materialized_partitions(asset))
    progress = [
        LoadProgress(p, sum(b in applied for b in needed), len(needed))
        for p in loads
        for needed in [_needed_batches(p, table)]
    ]
    return next((p for p in progress if p.complete), progress[-1])
