"""The tombstone horizon counts a snapshot until retention has pruned it: its chunks not read yet will carry rows
as old as its floor, which a forgotten tombstone could no longer hide."""

from __future__ import annotations

from datetime import UTC, datetime

from dbmazz_connectors.core.snapshot import FULL_RANGE, SnapshotChunk
from dbmazz_connectors.engine import tombstone_horizon
from dbmazz_connectors.snapshots import SnapshotPlan
from dbmazz_connectors.sources.postgres.position import Lsn

from ._kit import TABLE, write_log


def test_a_snapshot_not_yet_pruned_holds_the_horizon_at_its_floor(changelog):
    batch_ids = write_log(changelog)
    for batch_id in batch_ids[:2]:
        changelog.delete_batch("p", batch_id)  # retention took b1, b2: the horizon is b3's start
    assert tombstone_horizon(changelog, "p") == 2000
    plan = SnapshotPlan(
        "p",
        f"{1200:020d}-abcdef",
        Lsn(1200),
        (TABLE,),
        ((SnapshotChunk(TABLE, 0, FULL_RANGE),),),
        True,
        "re-sync",
        datetime.now(UTC).isoformat(),
    )
    changelog.write_snapshot_plan("p", plan.snapshot_id, plan.to_dict())  # planned at 1200, no chunk read yet
    assert (
        tombstone_horizon(changelog, "p") == 1200
    )  # b2's tombstones (1500) must stay: a chunk may hold keys 1..100
    changelog.record_snapshot_pruned("p", plan.snapshot_id)  # its batches read, applied and pruned
    assert changelog.pruned_snapshots("p") == {plan.snapshot_id}
    assert tombstone_horizon(changelog, "p") == 2000
