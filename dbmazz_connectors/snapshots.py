"""Snapshots through the change log: plan a table's chunks, capture them as batches, sweep what is gone.

A snapshot of some tables (the initial load, or a re-sync) is planned once: the source's
``snapshot_floor`` is read, every table is split into primary-key chunks, and the chunks are
grouped into batches (``snap-<id>-00000`` ...). A plan of whole tables ends with one more batch,
the sweep (``snap-<id>-sweep``): a truncate at ``floor - 1`` of each table, which removes from a
sink every row older than the snapshot (rows the source no longer has; a re-sync that only
upserted would leave them). Every batch is an ordinary change-log batch that applies like any
other, idempotently, in any order with CDC batches (docs/architecture.md, "Snapshots").

Capturing a batch is idempotent: a batch whose manifest exists is never read again, so a snapshot
killed half-way resumes from its first unfinished batch.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .changelog import BatchManifest, ChangeLog
from .changelog.store import BatchWriter
from .core.batch import Heartbeat, Rows, Truncate
from .core.errors import ChangeLogError, ConfigError
from .core.positions import SourcePosition, position_from_dict
from .core.protocols import Source
from .core.schema import TableSchema
from .core.snapshot import FULL_RANGE, KeyRange, SnapshotChunk, SnapshotSource
from .engine import check_table_identities, set_up_source

__all__ = [
    "SnapshotPlan",
    "SnapshotSettings",
    "plan_snapshot",
    "capture_snapshot_batch",
    "run_snapshot",
    "is_snapshot_batch",
    "snapshot_of_batch",
    "snapshot_progress",
    "SNAPSHOT_PREFIX",
    "restart_after_lost_log",
    "load_plan",
    "plans",
]

SNAPSHOT_PREFIX = "snap-"
SWEEP = "sweep"


@dataclass(frozen=True)
class SnapshotSettings:
    """How a snapshot is read. ``parallelism`` chunks are read at once (default: the machine's cores, 2..4)."""

    chunk_rows: int = 100_000
    chunks_per_batch: int = 10
    parallelism: int = max(2, min(4, os.cpu_count() or 2))

    def __post_init__(self) -> None:
        if self.chunk_rows < 1 or self.chunks_per_batch < 1 or self.parallelism < 1:
            raise ConfigError(f"expected positive snapshot settings, got {self}")


@dataclass(frozen=True)
class SnapshotPlan:
    """A planned snapshot: its floor, its tables and their chunks grouped into batches."""

    pipeline: str
    snapshot_id: str
    floor: SourcePosition
    tables: tuple[str, ...]
    batches: tuple[tuple[SnapshotChunk, ...], ...]
    sweep: bool  # whole tables: a final batch removes rows older than the floor
    reason: str
    created_at: str

    def batch_ids(self) -> list[str]:
        ids = [f"{SNAPSHOT_PREFIX}{self.snapshot_id}-{i:05d}" for i in range(len(self.batches))]
        return ids + ([f"{SNAPSHOT_PREFIX}{self.snapshot_id}-{SWEEP}"] if self.sweep else [])

    def chunks_of(self, batch_id: str) -> tuple[SnapshotChunk, ...] | None:
        """The chunks of a batch of this plan; () for the sweep; None if the batch is not this plan's."""
        prefix = f"{SNAPSHOT_PREFIX}{self.snapshot_id}-"
        if not batch_id.startswith(prefix):
            return None
        tail = batch_id[len(prefix) :]
        if tail == SWEEP and self.sweep:
            return ()
        if tail.isdigit() and int(tail) < len(self.batches):
            return self.batches[int(tail)]
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline,
            "snapshot_id": self.snapshot_id,
            "floor": self.floor.to_dict(),
            "tables": list(self.tables),
            "batches": [[c.to_dict() for c in b] for b in self.batches],
            "sweep": self.sweep,
            "reason": self.reason,
            "created_at": self.created_at,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SnapshotPlan:
        return cls(
            pipeline=data["pipeline"],
            snapshot_id=data["snapshot_id"],
            floor=position_from_dict(data["floor"]),
            tables=tuple(data["tables"]),
            batches=tuple(tuple(SnapshotChunk.from_dict(c) for c in b) for b in data["batches"]),
            sweep=bool(data["sweep"]),
            reason=data.get("reason", ""),
            created_at=data["created_at"],
        )


def is_snapshot_batch(batch_id: str) -> bool:
    return batch_id.startswith(SNAPSHOT_PREFIX)


def snapshot_of_batch(batch_id: str) -> str | None:
    """The snapshot id a batch id belongs to (``snap-<id>-<n>`` -> ``<id>``), or None for a log batch."""
    if not is_snapshot_batch(batch_id):
        return None
    return batch_id[len(SNAPSHOT_PREFIX) :].rsplit("-", 1)[0]


def _snapshot_source(source: Source) -> SnapshotSource:
    if not isinstance(source, SnapshotSource):
        raise ConfigError(f"the {source.name} source cannot read snapshots")
    return source


def plan_snapshot(
    source: Source,
    changelog: ChangeLog,
    pipeline: str,
    tables: Iterable[str],
    settings: SnapshotSettings = SnapshotSettings(),
    *,
    key_range: KeyRange = FULL_RANGE,
    reason: str = "re-sync",
) -> SnapshotPlan:
    """Plan (and record in the change log) a snapshot of ``tables``; nothing is read yet.

    The source is set up first (idempotent), so its change stream covers everything after the floor.
    A snapshot of a key range has no sweep: it repairs the rows of the range but cannot know which
    sink rows are gone (a whole-table re-sync removes those).
    """
    snap = _snapshot_source(source)
    tables = tuple(tables)
    if not tables:
        raise ConfigError("expected at least one table to snapshot, got none")
    set_up_source(
        source
    )  # idempotent: e.g. a re-created table goes back into the publication before the floor
    check_table_identities(source, changelog, pipeline, record=tables)  # a re-sync accepts a re-created table
    floor = snap.snapshot_floor()  # before any chunk is read: every chunk's version is at or after it
    chunks: list[SnapshotChunk] = []
    for table in tables:
        for index, key_range_ in enumerate(snap.plan_chunks(table, settings.chunk_rows, key_range)):
            chunks.append(SnapshotChunk(table, index, key_range_))
    per = settings.chunks_per_batch
    batches = tuple(tuple(chunks[i : i + per]) for i in range(0, len(chunks), per))
    snapshot_id = f"{floor.version:020d}-{uuid.uuid4().hex[:6]}"
    plan = SnapshotPlan(
        pipeline,
        snapshot_id,
        floor,
        tables,
        batches,
        key_range.is_full,
        reason,
        datetime.now(UTC).isoformat(),
    )
    changelog.write_snapshot_plan(pipeline, snapshot_id, plan.to_dict())
    return plan


def restart_after_lost_log(
    source: Source,
    changelog: ChangeLog,
    pipeline: str,
    tables: Iterable[str],
    settings: SnapshotSettings = SnapshotSettings(),
) -> SnapshotPlan:
    """Start a pipeline again after its source lost the log it needed (an invalidated slot, a purged binlog).

    The changes between the old checkpoint and now are gone, so: set the source up again (for PostgreSQL
    the invalidated slot must have been dropped first, as ``dbmazz check`` prints), move the pipeline's
    checkpoint to where the new change stream starts, and re-sync every table (whole tables: the sweep
    removes what was deleted meanwhile).
    """
    set_up_source(source)
    start = source.checkpoint_position() or source.current_position()
    changelog.record_idle_checkpoint(pipeline, start)
    return plan_snapshot(source, changelog, pipeline, tables, settings, reason="re-sync after a lost log")


def load_plan(changelog: ChangeLog, pipeline: str, snapshot_id: str) -> SnapshotPlan:
    data = changelog.snapshot_plan(pipeline, snapshot_id)
    if data is None:
        raise ChangeLogError(
            f"snapshot {snapshot_id} of pipeline {pipeline} is not planned in the change log "
            f"{changelog.root}; snapshots are planned by the re-sync job or the capture sensor"
        )
    return SnapshotPlan.from_dict(data)


def plans(changelog: ChangeLog, pipeline: str) -> list[SnapshotPlan]:
    return [SnapshotPlan.from_dict(d) for d in changelog.snapshot_plans(pipeline)]


def capture_snapshot_batch(
    source: Source,
    changelog: ChangeLog,
    pipeline: str,
    batch_id: str,
    settings: SnapshotSettings = SnapshotSettings(),
    *,
    schemas: Mapping[str, TableSchema] | None = None,
) -> BatchManifest:
    """Read one batch of a planned snapshot into the change log. Idempotent: a complete batch is not read again.

    Never acknowledges the source: a snapshot batch does not move the pipeline's checkpoint.
    """
    snapshot_id = snapshot_of_batch(batch_id)
    if snapshot_id is None:
        raise ChangeLogError(f"batch {batch_id} is not a snapshot batch")
    existing = changelog.manifest(pipeline, batch_id)
    if existing is not None:
        return existing
    plan = load_plan(changelog, pipeline, snapshot_id)
    chunks = plan.chunks_of(batch_id)
    if chunks is None:
        raise ChangeLogError(f"batch {batch_id} is not part of snapshot {snapshot_id} of pipeline {pipeline}")
    began = time.monotonic()
    info = {
        "id": snapshot_id,
        "tables": list(plan.tables),
        "reason": plan.reason,
        "chunks": [c.to_dict() for c in chunks],
        "sweep": not chunks,
        "batches": len(plan.batch_ids()),
    }
    writer = changelog.writer(pipeline, batch_id, plan.floor, kind="snapshot", snapshot=info)
    schemas = schemas if schemas is not None else source.table_schemas()
    tables = plan.tables if not chunks else tuple(dict.fromkeys(c.table for c in chunks))
    for table in tables:
        writer.declare_table(schemas[table])
    if chunks:
        _write_in_lanes(
            writer, _snapshot_source(source).read_snapshot(chunks, settings.parallelism), settings.parallelism
        )
    else:
        now_us = int(datetime.now(UTC).timestamp() * 1_000_000)
        for table in plan.tables:
            writer.add(Truncate(table, plan.floor.version - 1, now_us))
    writer.add(Heartbeat(plan.floor))
    return writer.commit({"capture_seconds": round(time.monotonic() - began, 3)})


def _write_in_lanes(writer: BatchWriter, stream: Iterable[Rows], lanes: int) -> None:
    """Write the stream's rows on ``lanes`` parts side by side (Parquet encoding and compression release the GIL).

    One thread writing every chunk was the bottleneck of a snapshot: the readers waited for it. At
    most ``lanes`` chunks are in flight besides the one the stream is producing.
    """
    with ThreadPoolExecutor(lanes, thread_name_prefix="dbmazz-snapshot-write") as pool:
        busy: dict[Future, int] = {}
        free = list(range(lanes))
        try:
            for rows in stream:
                if not free:
                    done, _ = wait(busy, return_when=FIRST_COMPLETED)
                    for future in done:
                        free.append(busy.pop(future))
                        future.result()
                lane = free.pop()
                busy[pool.submit(writer.add_unordered, rows, lane)] = lane
        finally:
            for future in list(busy):
                exc = future.exception()
                if exc is not None and sys.exc_info()[1] is None:
                    raise exc


def run_snapshot(
    source: Source, changelog: ChangeLog, plan: SnapshotPlan, settings: SnapshotSettings = SnapshotSettings()
) -> list[BatchManifest]:
    """Capture every batch of ``plan`` in order (the plain-Python way; Dagster runs them as partitions)."""
    schemas = source.table_schemas()
    return [
        capture_snapshot_batch(source, changelog, plan.pipeline, batch_id, settings, schemas=schemas)
        for batch_id in plan.batch_ids()
    ]


def snapshot_progress(changelog: ChangeLog, plan: SnapshotPlan) -> dict[str, int]:
    """How many of the plan's batches are captured: ``{"batches": n, "captured": n}``."""
    ids = plan.batch_ids()
    return {
        "batches": len(ids),
        "captured": sum(changelog.manifest(plan.pipeline, b) is not None for b in ids),
    }


def snapshot_batch_ids(plans_: Sequence[SnapshotPlan]) -> list[str]:
    return [b for p in plans_ for b in p.batch_ids()]
