"""Row-count parity at a fixed position: tells a damaged sink from one that is only behind.

A sink table holds the source table as of its high-water version ``H`` (the newest change applied to it;
batches apply in order, docs/architecture.md). The source is counted *now*, between two reads of its position
``P0 <= P1``. Once capture has passed ``P1``, the change log holds every change of the table between ``H`` and
``P1``, and each one moves the count by a known amount (an insert +1, a delete -1, an update 0; a key update is a
delete and an insert). So the sink's count, carried forward from ``H`` over those changes, is what the source
held at each commit between ``P0`` and ``P1``; the source's count must equal one of these. A count that equals
none of them is rows the sink lost or gained outside the pipeline (or a batch not applied), however far behind
the sink is: lag only lengthens the stretch of change log read.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from dbmazz_connectors.changelog import ChangeLog
from dbmazz_connectors.core.batch import Rows, SchemaChange, Truncate
from dbmazz_connectors.core.schema import OP_COLUMN, OP_DELETE, OP_INSERT, VERSION_COLUMN
from dbmazz_connectors.snapshots import is_snapshot_batch

__all__ = ["Parity", "compare_counts", "count_changes"]


@dataclass(frozen=True)
class Parity:
    """The outcome: ``passed`` None when the counts could not be compared (``reason`` says why)."""

    passed: bool | None
    reason: str
    metadata: dict


def _log_batches(partitions: list[str], low: int, high: int) -> list[str]:
    """The log batches whose range (start, end] meets (low, high]; a log batch id is ``<start>-<end>``."""
    chosen = []
    for batch_id in partitions:
        if is_snapshot_batch(batch_id):
            continue
        start, _, end = batch_id.partition("-")
        if start.isdigit() and end.isdigit() and int(start) < high and int(end) > low:
            chosen.append(batch_id)
    return sorted(chosen)


def count_changes(
    changelog: ChangeLog, pipeline: str, table: str, partitions: list[str], low: int, high: int
) -> tuple[np.ndarray, np.ndarray] | str:
    """Versions and count deltas (+1, -1, 0) of the table's changes in (low, high], in version order; or why they
    cannot be counted (a truncate or a batch pruned from the change log)."""
    versions, deltas = [np.empty(0, dtype=np.int64)], [np.empty(0, dtype=np.int64)]
    for batch_id in _log_batches(partitions, low, high):
        manifest = changelog.manifest(pipeline, batch_id)
        if manifest is None:
            return f"batch {batch_id} is no longer in the change log"
        if (
            table not in manifest.tables
            or not manifest.tables[table].rows
            and not manifest.tables[table].entries
        ):
            continue
        for event in changelog.read_batch(pipeline, batch_id, table).events:
            if isinstance(event, Truncate) and low < event.version <= high:
                return f"the table was truncated in batch {batch_id}"
            if isinstance(event, SchemaChange) or not isinstance(event, Rows):
                continue
            version = event.data.column(VERSION_COLUMN).to_numpy().astype(np.int64)
            op = event.data.column(OP_COLUMN).to_numpy()
            keep = (version > low) & (version <= high)
            versions.append(version[keep])
            deltas.append(np.where(op[keep] == OP_INSERT, 1, np.where(op[keep] == OP_DELETE, -1, 0)))
    version, delta = np.concatenate(versions), np.concatenate(deltas)
    order = np.argsort(version, kind="stable")
    return version[order], delta[order]


def compare_counts(
    *,
    changelog: ChangeLog,
    pipeline: str,
    table: str,
    partitions,
    sink_rows: int,
    high_water: int,
    source_rows: int,
    p0: int,
    p1: int,
    captured_to,
    wait_seconds: float,
) -> Parity:
    """Compare ``source_rows`` (counted between positions ``p0`` and ``p1``) with ``sink_rows`` (the sink at its
    high-water version), waiting up to ``wait_seconds`` for capture (``captured_to()``: the change log's
    checkpoint version) to pass ``p1``."""
    deadline = time.monotonic() + wait_seconds
    while (captured := captured_to()) < p1:
        if time.monotonic() >= deadline:
            return Parity(
                None,
                f"not compared: capture is at {captured}, behind the source's count at {p1} after "
                f"{wait_seconds:.0f} s (the pipeline is lagging; the next evaluation compares again)",
                {"source_rows": source_rows, "sink_rows": sink_rows},
            )
        time.sleep(0.5)
    low, high = min(high_water, p0), max(high_water, p1)
    counted = count_changes(changelog, pipeline, table, partitions(), low, high)
    if isinstance(counted, str):
        return Parity(None, f"not compared: {counted}", {"source_rows": source_rows, "sink_rows": sink_rows})
    version, delta = counted
    # the count the source had right after each commit, carried from the sink's count at its high-water version
    steps = np.cumsum(delta)
    at_high_water = (
        int(steps[np.searchsorted(version, high_water, side="right") - 1])
        if (version <= high_water).any()
        else 0
    )

    def expected_at(position: int) -> int:
        i = np.searchsorted(version, position, side="right")
        return sink_rows + (int(steps[i - 1]) if i else 0) - at_high_water

    window = version[(version > p0) & (version <= p1)]
    candidates = sorted({expected_at(p0), *(expected_at(int(v)) for v in np.unique(window))})
    nearest = min(candidates, key=lambda n: abs(source_rows - n))
    unexplained = source_rows - nearest
    metadata = {
        "source_rows": source_rows,
        "sink_rows": sink_rows,
        "expected_source_rows": nearest,
        "unexplained_rows": unexplained,
        "sink_high_water_version": high_water,
        "source_counted_between": f"{p0}..{p1}",
        "changes_between": int((version > min(high_water, p0)).sum()),
        "sink_behind_by_changes": int(((version > high_water) & (version <= p1)).sum()),
    }
    if unexplained == 0:
        return Parity(
            True,
            "the sink's count, carried over the changes captured since its high-water version, "
            "equals the source's",
            metadata,
        )
    what = (
        f"{unexplained} rows missing in the sink"
        if unexplained > 0
        else f"{-unexplained} rows too many in the sink"
    )
    return Parity(
        False,
        f"{what}: not explained by the {metadata['sink_behind_by_changes']} changes it has not "
        "applied yet (rows changed in the sink outside dbmazz, or a batch not applied: see the "
        "sink table's failed partitions; a re-sync of the table repairs it)",
        metadata,
    )
