"""Retention: batches past ``retention_batches`` that every sink has applied leave the change log and the UI;
then sinks that can forget tombstones below the new horizon do (``forget_tombstones``)."""

from __future__ import annotations

import time

import dagster as dg

from dbmazz_connectors.changelog import ChangeLog
from dbmazz_connectors.config import PipelineConfig
from dbmazz_connectors.core import create_sink
from dbmazz_connectors.core.protocols import TombstonePruning
from dbmazz_connectors.engine import tombstone_horizon
from dbmazz_connectors.snapshots import SNAPSHOT_PREFIX, snapshot_of_batch

from .translator import PipelineSpecs

__all__ = ["prune", "forget_tombstones", "TOMBSTONE_INTERVAL_SECONDS"]

# Forgetting tombstones scans each sink table (ClickHouse: a GROUP BY over every row), so retention does it at
# most this often per pipeline and process, not on every sensor tick that prunes a batch.
TOMBSTONE_INTERVAL_SECONDS = 600.0
_last_forgotten: dict[str, float] = {}


def _age(batch_id: str) -> str:
    """Orders log batches (``<start>-<end>``) and snapshot batches (``snap-<floor>-…``) by source position."""
    return batch_id[len(SNAPSHOT_PREFIX) :] if batch_id.startswith(SNAPSHOT_PREFIX) else batch_id


def prune(
    instance: dg.DagsterInstance,
    specs: PipelineSpecs,
    changelog: ChangeLog,
    partitions: list[str],
    log_event=None,
) -> list[str]:
    """Delete the oldest batches beyond retention that every sink table has applied; returns their ids.

    What it did is observed on ``<pipeline>/changes`` (``operations.py``): runless, or the run's own event
    when ``log_event`` (a streaming run's ``context.log_event``) is given.

    A snapshot's batches go only all together, once every one of them is applied by every sink: a
    half-applied snapshot keeps all its batches, so a sink that missed one can still be repaired
    from the change log (and the initial-load check can still count them).
    """
    pipeline = specs.pipeline
    excess = len(partitions) - pipeline.retention_batches
    if excess <= 0:
        return []
    applied = {
        (sink, table): set(instance.get_materialized_partitions(key))
        for (sink, table), key in ((k, s.key) for k, s in specs.sinks.items())
    }
    prunable: list[str] = []
    seen: set[str] = set()
    for batch_id in sorted(partitions, key=_age)[:excess]:
        snapshot_id = snapshot_of_batch(batch_id)
        if snapshot_id is None:
            if _applied_everywhere(changelog, pipeline.name, batch_id, applied):
                prunable.append(batch_id)
        elif snapshot_id not in seen:
            seen.add(snapshot_id)
            members = [p for p in partitions if snapshot_of_batch(p) == snapshot_id]
            if all(_applied_everywhere(changelog, pipeline.name, m, applied) for m in members):
                prunable += members
    for batch_id in prunable:
        changelog.delete_batch(pipeline.name, batch_id)
    for snapshot_id in dict.fromkeys(s for s in map(snapshot_of_batch, prunable) if s is not None):
        # after its batches: a crash in between leaves the snapshot counted in the tombstone horizon (safe)
        changelog.record_snapshot_pruned(pipeline.name, snapshot_id)
    forgotten: dict[str, int] | None = None
    if (
        prunable
        and time.monotonic() - _last_forgotten.get(pipeline.name, -TOMBSTONE_INTERVAL_SECONDS)
        >= TOMBSTONE_INTERVAL_SECONDS
    ):
        _last_forgotten[pipeline.name] = time.monotonic()
        forgotten = forget_tombstones(changelog, pipeline, dg.get_dagster_logger())
    if prunable:
        _observe_pruning(instance, specs, changelog, prunable, forgotten, log_event)
    return prunable


def _observe_pruning(
    instance,
    specs: PipelineSpecs,
    changelog: ChangeLog,
    pruned: list[str],
    forgotten: dict[str, int] | None,
    log_event,
) -> None:
    from .operations import observe

    ordered = sorted(pruned, key=_age)
    snapshots = sorted({s for s in map(snapshot_of_batch, pruned) if s is not None})
    metadata: dict[str, object] = {
        "batches_pruned": len(pruned),
        "first_batch": ordered[0],
        "last_batch": ordered[-1],
        "snapshots_pruned": dg.MetadataValue.json(snapshots),
        "retention_batches": specs.pipeline.retention_batches,
    }
    text = (
        f"retention: {len(pruned)} batches applied by every sink table left the change log ({ordered[0]} .. "
        f"{ordered[-1]})"
    )
    if forgotten is not None:
        horizon = tombstone_horizon(changelog, specs.pipeline.name)
        metadata.update(
            {
                "tombstones_forgotten": dg.MetadataValue.json(forgotten),
                "tombstone_horizon": horizon if horizon is not None else "",
            }
        )
        text += "; tombstones below version {} forgotten: {}".format(
            horizon, ", ".join(f"{sink} {n}" for sink, n in forgotten.items()) or "no sink forgets them"
        )
    observe(instance, specs.changes_key, "retention", text, metadata, log_event)


def forget_tombstones(changelog: ChangeLog, pipeline: PipelineConfig, log=None) -> dict[str, int]:
    """Each sink that can (``TombstonePruning``) forgets the tombstones below the change log's horizon.

    Returns the keys forgotten per sink. A sink that fails is logged and skipped: nothing is lost, the next
    retention forgets them (the horizon only rises). Safe at any time, as often as wanted (docs/architecture.md).
    """
    horizon = tombstone_horizon(changelog, pipeline.name)
    if horizon is None:
        return {}
    forgotten: dict[str, int] = {}
    for name in pipeline.sinks:
        try:
            sink = create_sink(pipeline.sink_config(name))
            if not isinstance(sink, TombstonePruning):
                continue
            sink.connect()
            try:
                # the pipeline's own tables only: another pipeline's tables in the same database have versions
                # of another source, which this horizon says nothing about
                forgotten[name] = sum(sink.prune_tombstones(table, horizon) for table in pipeline.tables)
            finally:
                sink.disconnect()
        except Exception as exc:  # noqa: BLE001 - the batches are already pruned; never fail retention for this
            if log is not None:
                log.warning(f"pipeline {pipeline.name}: sink {name} kept its tombstones for now: {exc}")
            continue
        if log is not None:
            log.info(
                f"pipeline {pipeline.name}: sink {name} forgot {forgotten[name]} tombstones below version "
                f"{horizon}"
            )
    return forgotten


def _applied_everywhere(changelog: ChangeLog, pipeline: str, batch_id: str, applied: dict) -> bool:
    """Every sink table holding changes in the batch has applied it (a table the batch lacks needs nothing)."""
    missing = {table for (_, table), done in applied.items() if batch_id not in done}
    if not missing:
        return True
    manifest = changelog.manifest(pipeline, batch_id)
    return manifest is not None and not missing & set(manifest.tables)
