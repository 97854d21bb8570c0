"""The job ``<pipeline>_resync``: plan a snapshot of some tables (or of a key range) from the UI.

The job only plans: it sets the source up (idempotent), records the snapshot plan in the change log
and adds its batches as partitions of ``<pipeline>_batches``. The capture sensor then runs them one at
a time, taking turns with live changes, exactly like an initial load.
"""

from typing import Any

import dagster as dg
from pydantic import Field

from dbmazz_connectors.config import PipelineConfig
from dbmazz_connectors.core import ConfigError
from dbmazz_connectors.core.snapshot import KeyRange
from dbmazz_connectors.engine import set_up_source
from dbmazz_connectors.snapshots import SnapshotPlan, plan_snapshot, restart_after_lost_log

from .naming import PIPELINE_TAG, batch_partitions, resource_key, resync_job_name
from .snapshot_batches import describe_plan

__all__ = ["ResyncConfig", "build_resync_job"]


class ResyncConfig(dg.Config):
    """What to re-sync. Bounds are primary-key values in key-column order, e.g. ``lower: [1000]``."""

    tables: list[str] = Field(default_factory=list, description="tables to re-sync (default: every table)")
    lower: list[Any] | None = Field(None, description="re-sync only keys >= this (one table only)")
    upper: list[Any] | None = Field(None, description="re-sync only keys < this (one table only)")
    after_lost_log: bool = Field(
        False,
        description=(
            "the source lost the log the pipeline needed (an invalidated slot, dropped as `dbmazz check` prints; a "
            "purged binlog): capture restarts where the new change stream starts, and every table is re-synced"
        ),
    )


def _tables_and_range(pipeline: PipelineConfig, config: ResyncConfig) -> tuple[list[str], KeyRange]:
    tables = list(config.tables) or list(pipeline.tables)
    unknown = [t for t in tables if t not in pipeline.tables]
    if unknown:
        raise ConfigError(
            f"expected tables of pipeline {pipeline.name} ({', '.join(pipeline.tables)}), "
            f"got {', '.join(unknown)}"
        )
    key_range = KeyRange(
        tuple(config.lower) if config.lower else None, tuple(config.upper) if config.upper else None
    )
    if not key_range.is_full and len(tables) != 1:
        raise ConfigError(
            f"expected one table with a key range (lower/upper), got {len(tables)}",
            hint="name the table in tables: [schema.table]",
        )
    if config.after_lost_log and (config.tables or not key_range.is_full):
        raise ConfigError(
            "expected no tables and no key range with after_lost_log (every table is re-synced), "
            f"got tables {list(config.tables)} and key range {key_range}"
        )
    return tables, key_range


def _plan_metadata(plan: SnapshotPlan) -> dict[str, object]:
    return {
        "dbmazz/snapshot": plan.snapshot_id,
        "reason": plan.reason,
        "tables": dg.MetadataValue.json(list(plan.tables)),
        "floor": str(plan.floor),
        "batches": len(plan.batch_ids()),
        "chunks": sum(len(b) for b in plan.batches),
        "sweep": plan.sweep,
        "plan": dg.MetadataValue.md(describe_plan(plan)),
    }


def build_resync_job(pipeline: PipelineConfig) -> dg.JobDefinition:
    key = resource_key(pipeline.name)

    @dg.op(name=f"{pipeline.name}_plan_resync", required_resource_keys={key}, out=dg.Out(dg.Nothing))
    def plan_resync(context: dg.OpExecutionContext, config: ResyncConfig):
        """Set the source up, plan the snapshot, add its batches as partitions for the capture sensor."""
        tables, key_range = _tables_and_range(pipeline, config)
        resource = getattr(context.resources, key)
        changelog = resource.open_changelog()
        source = resource.connect_source()
        try:
            if config.after_lost_log:
                plan = restart_after_lost_log(
                    source, changelog, pipeline.name, tables, pipeline.snapshot_settings()
                )
            else:
                set_up_source(
                    source
                )  # a table re-created or added: back into the capture before the floor is read
                plan = plan_snapshot(
                    source,
                    changelog,
                    pipeline.name,
                    tables,
                    pipeline.snapshot_settings(),
                    key_range=key_range,
                    reason="re-sync",
                )
        finally:
            source.disconnect()
        context.instance.add_dynamic_partitions(batch_partitions(pipeline.name).name, plan.batch_ids())
        context.log.info(
            f"planned {len(plan.batch_ids())} batches; the sensor {pipeline.name}_capture runs them\n"
            + describe_plan(plan)
        )
        yield dg.Output(None, metadata=_plan_metadata(plan))

    @dg.job(
        name=resync_job_name(pipeline.name),
        tags={PIPELINE_TAG: pipeline.name},
        executor_def=dg.in_process_executor,
        description=f"re-sync tables of {pipeline.name} (all, some, or a key range of one): plans a snapshot "
        "whose batches the capture sensor then runs",
    )
    def resync():
        plan_resync()

    return resync
