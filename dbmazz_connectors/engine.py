"""The plain-Python flow: capture a source range into the change log, apply a batch to a sink.

Ordering (docs/architecture.md, "Capture and apply"): a capture writes every part, then the manifest, and only then acknowledges
the source. A re-run of a batch whose manifest exists re-uses it; one whose manifest does not
exist re-reads the same range (the source was not acknowledged).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import cast

import pyarrow as pa
import pyarrow.compute as pc

from .changelog import BatchManifest, ChangeLog
from .changelog.store import Segment
from .core.batch import ChangeBatch, Rows, SchemaChange, Truncate
from .core.compaction import conform, fold
from .core.errors import ChangeLogError, DbmazzError, PreflightError, TableChangedError
from .core.positions import SourcePosition, position_from_dict
from .core.protocols import BatchRef, P, Sink, Source, WriteResult
from .core.schema import VERSION_COLUMN, TableSchema

__all__ = [
    "set_up_source",
    "capture_range",
    "apply_batch",
    "fold_table",
    "batch_id_for",
    "check_table_identities",
    "tombstone_horizon",
    "bounded_end",
    "DEFAULT_MAX_BATCH_BYTES",
]

# The default cap on the source log a batch covers (a pipeline's ``max_batch_bytes``): a backlog becomes batches
# of about this much WAL or binlog (~1M changes of a narrow table), while normal traffic is far below it.
DEFAULT_MAX_BATCH_BYTES = 256 * 1024 * 1024


def set_up_source(source: Source) -> None:
    """Run every preflight check, then the (idempotent) setup; nothing changes when a check fails.

    Raises:
        PreflightError: listing each problem with the statement that fixes it.
    """
    problems = source.preflight()
    if problems:
        raise PreflightError(problems)
    source.setup()


def batch_id_for(start: SourcePosition, end: SourcePosition) -> str:
    """A sortable, readable batch id for the range (start, end] (also the Dagster partition key)."""
    return f"{start.version:020d}-{end.version:020d}"


def bounded_end(start: P, current: P, max_bytes: int | None) -> P:
    """Where the batch starting after ``start`` ends: ``current``, or at most ``max_bytes`` of source log after
    ``start`` where the position type can tell (``SourcePosition.capped``). ``max_bytes`` None or 0: no cap.

    The source still takes every transaction whole by its commit position (the range extends to the next
    transaction boundary at or after the end), so a cap never splits one; a transaction larger than the cap lands
    whole in the batch holding its commit, and a capped range inside it holds no change and only moves the
    checkpoint. Why this is safe: docs/architecture.md, "Bounded batches".
    """
    if not max_bytes or current <= start:
        return current
    capped = start.capped(current, max_bytes)
    if type(capped) is not type(current) or not start < capped <= current:  # a plugin's mistake: no cap
        return current
    return capped


def capture_range(
    source: Source[P],
    changelog: ChangeLog,
    pipeline: str,
    start: P,
    end: P,
    *,
    batch_id: str | None = None,
    tables: Iterable[TableSchema] = (),
) -> BatchManifest:
    """Capture the source range (start, end] as one batch of the change log, then acknowledge it.

    Idempotent: if the batch is already complete its manifest is returned (and the source is
    acknowledged again, a no-op if it already was).

    Args:
        source: a connected source.
        changelog: where the batch is staged.
        pipeline: the pipeline's name.
        start: the checkpoint the batch starts after.
        end: the upper bound fixed when the batch was planned; the batch extends to the next
            transaction boundary at or after it.
        batch_id: defaults to ``batch_id_for(start, end)``.
        tables: schemas to declare even if they have no change, so every sink table sees the batch.

    Returns:
        The batch's manifest; ``manifest.end`` is the position the source was acknowledged to.
    """
    batch_id = batch_id or batch_id_for(start, end)
    existing = changelog.manifest(pipeline, batch_id)
    if existing is not None:
        source.checkpoint(cast(P, existing.end))  # read back from this source's own batch
        return existing
    check_table_identities(source, changelog, pipeline)
    if hasattr(source, "set_resync_floors"):
        source.set_resync_floors(resync_floors(changelog, pipeline))
    began = time.monotonic()
    writer = changelog.writer(pipeline, batch_id, start)
    for schema in tables:
        writer.declare_table(schema)
    for event in source.read_changes(start, end):
        writer.add(event)
    manifest = writer.commit({"capture_seconds": round(time.monotonic() - began, 3)})
    source.checkpoint(cast(P, manifest.end))  # the Heartbeat the source yielded
    return manifest


def tombstone_horizon(changelog: ChangeLog, pipeline: str) -> int | None:
    """The lowest version any change still replayable can carry; a sink may forget tombstones below it.

    Every batch still in the change log holds versions above its start (a snapshot batch: at or above its
    floor, its start); a snapshot that retention has not pruned may still write chunks at its floor; batches
    captured later start at the checkpoint, past all of them. With no batch
    kept, the checkpoint itself bounds what can come; None when nothing is known (prune nothing).
    Why this is safe: docs/architecture.md, "Forgetting tombstones".
    """
    starts = [m.start.version for m in changelog.batches(pipeline)]
    # a snapshot not yet pruned may still write batches (chunks not read yet): their rows are as old as its floor
    pruned = changelog.pruned_snapshots(pipeline)
    starts += [
        position_from_dict(plan["floor"]).version
        for plan in changelog.snapshot_plans(pipeline)
        if plan["snapshot_id"] not in pruned
    ]
    if starts:
        return min(starts)
    checkpoint = changelog.checkpoint(pipeline)
    return None if checkpoint is None else checkpoint.version


def resync_floors(changelog: ChangeLog, pipeline: str) -> dict[str, int]:
    """Each table's latest whole-table snapshot floor (as a version): everything older is superseded by it."""
    floors: dict[str, int] = {}
    for plan in changelog.snapshot_plans(pipeline):
        if plan.get("sweep"):
            floor = position_from_dict(plan["floor"]).version
            for table in plan["tables"]:
                floors[table] = max(floors.get(table, -1), floor)
    return floors


def check_table_identities(
    source: Source, changelog: ChangeLog, pipeline: str, *, record: Iterable[str] = ()
) -> None:
    """Refuse to capture a table that is not the one captured so far (dropped, or dropped and re-created).

    Sources that can tell (``table_identities()``, e.g. PostgreSQL's relation ids) are compared with the
    identities the change log recorded; a table seen for the first time, or named in ``record`` (a snapshot
    of it is being planned, which re-syncs it), has its identity recorded instead.

    Raises:
        TableChangedError: naming the table and the fix (re-sync it).
    """
    identities = getattr(source, "table_identities", None)
    if identities is None:
        return
    current = identities()
    known = changelog.table_identities(pipeline)
    record = set(record)
    for table, identity in current.items():
        if table in record:
            continue
        if identity is None:
            raise TableChangedError(
                table,
                "no longer exists in the source",
                "re-create it, run setup again and re-sync the table, or remove it from the pipeline",
            )
        if table in known and known[table] != identity:
            raise TableChangedError(
                table,
                "was dropped and re-created, or changed in a way capture cannot follow "
                f"(now {identity}; captured until now: {known[table]})",
                "run setup again, then re-sync the table (it replaces the sinks' copies with the "
                "new table's rows)",
            )
    fresh = {t: i for t, i in current.items() if i is not None and (t in record or t not in known)}
    if fresh:
        changelog.record_table_identities(pipeline, fresh)


def apply_batch(
    changelog: ChangeLog, sink: Sink, pipeline: str, batch_id: str, tables: Iterable[str] | None = None
) -> dict[str, WriteResult]:
    """Apply one complete batch (all its tables, or ``tables``) to a connected sink, exactly once per table.

    One table's failure does not keep the others from being applied: every table is tried, then the first
    failure is raised (naming its table; the others' are attached as notes). A re-run applies only what failed.
    """
    manifest = changelog.manifest(pipeline, batch_id)
    if manifest is None:
        raise ChangeLogError(
            f"batch {batch_id} of pipeline {pipeline} is not in the change log {changelog.root}"
        )
    ref = BatchRef(pipeline, batch_id)
    results: dict[str, WriteResult] = {}
    failures: list[tuple[str, DbmazzError]] = []
    for table in tables if tables is not None else sorted(manifest.tables):
        try:
            # Only a batch larger than a segment is cut (the manifest says so: no part is read for the many small
            # ones), and not one that changes the schema: that is checked against the sink before anything of the
            # batch is written, so such a batch applies whole (rare: DDL in the middle of a large batch)
            entry = manifest.tables.get(table)
            if (
                entry is not None
                and sum(entry.ops.values()) > changelog.segment_rows
                and not any(e["kind"] == "schema" for e in entry.entries)
            ):
                segments = changelog.segments(pipeline, batch_id, table)
                if len(segments) > 1:
                    results[table] = _apply_in_segments(changelog, sink, ref, table, segments)
                    continue
            batch = changelog.read_batch(pipeline, batch_id, table)
            sink.create_table(batch.schema)
            results[table] = sink.write_batch(batch, ref)
        except DbmazzError as exc:
            failures.append((table, exc))
    if failures:
        table, first = failures[0]
        first.add_note(f"while applying {table} of batch {batch_id}; applied: {', '.join(results) or 'none'}")
        for other, other_exc in failures[1:]:
            first.add_note(f"{other} failed too: {other_exc}")
        raise first
    return results


def _apply_in_segments(
    changelog: ChangeLog, sink: Sink, ref: BatchRef, table: str, segments: list[Segment]
) -> WriteResult:
    """Apply a large batch of ``table`` a segment (about ``segment_rows`` rows) at a time: memory stays that of one.

    The segments, applied in order, are smaller batches of the same change stream, so the sink ends as
    the whole batch would leave it (docs/architecture.md, "The ordering invariant"). Each is applied
    exactly once under its own reference (``<batch>/<segment>``), then the batch's own reference is
    recorded with no rows. A re-run after a crash skips the applied segments and goes on in order; the
    batch counts as applied only when every segment is. A segment that fails (a value the sink refuses,
    say) leaves the sink where the segments before it took it: an earlier point of the same stream.
    """
    if sink.is_applied(ref, table):
        return WriteResult(table, 0, True, sink.high_water_version(table))
    rows, details = 0, dict[str, int]()
    schema = segments[0].schema
    for segment in segments:
        batch = changelog.read_segment(ref.pipeline, ref.batch_id, table, segment)
        sink.create_table(batch.schema)
        part = sink.write_batch(batch, BatchRef(ref.pipeline, f"{ref.batch_id}/{segment.name}"))
        rows += part.rows_written
        for key, value in part.details.items():
            details[key] = details.get(key, 0) + value
        schema = batch.final_schema
        del batch, part  # before the next segment is read
    done = sink.write_batch(ChangeBatch(table, schema, []), ref)
    return WriteResult(table, rows, False, done.high_water_version, details)


def fold_table(changelog: ChangeLog, pipeline: str, table: str) -> tuple[TableSchema | None, pa.Table | None]:
    """The table's current state by the ordering invariant, folding every batch in order.

    The reference a sink must equal; used by tests and benchmarks. Returns the final schema and
    the live rows (data columns plus ``_dbmazz_*``), or (None, None) if the table never appeared.
    """
    schema: TableSchema | None = None
    state: pa.Table | None = None
    truncated = -1  # rows at or below the highest truncate version are gone, and stale when they come later
    for manifest in changelog.batches(pipeline):
        if table not in manifest.tables:
            continue
        batch = changelog.read_batch(pipeline, manifest.batch_id, table)
        schema = schema or batch.schema
        for event in batch.events:
            if isinstance(event, Rows):
                schema = event.schema
                rows = conform(event.data, schema)
                rows = (
                    rows.filter(pc.greater(rows.column(VERSION_COLUMN), truncated))
                    if truncated >= 0
                    else rows
                )
                state = fold(conform(state, schema) if state is not None else None, rows, schema.primary_key)
            elif isinstance(event, SchemaChange):
                schema = event.schema
                state = conform(state, schema) if state is not None else None
            elif isinstance(event, Truncate):
                truncated = max(truncated, event.version)
                if state is not None:
                    state = state.filter(pc.greater(state.column(VERSION_COLUMN), truncated))
    return schema, state
