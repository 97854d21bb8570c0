"""Bounded batches (``max_batch_bytes``): a backlog planned as the sensor plans it becomes several batches, each
ending at most the cap of WAL after its start, every transaction whole in the batch holding its commit; a
capture SIGKILLed in a capped batch resumes with the same boundaries, nothing lost or doubled."""

from __future__ import annotations

import os
from collections import Counter

import pyarrow.compute as pc
import pytest

from dbmazz_connectors.changelog import ChangeLog
from dbmazz_connectors.core import create_sink
from dbmazz_connectors.engine import apply_batch, batch_id_for, bounded_end, capture_range
from tests.fixtures.children import run_until_killed

from ._pg import assert_folded_equals_source, source_rows

# bytes of WAL per batch: the small transactions below take ~25 KB each, the large one ~2.5 MB
CAP = 96 * 1024
TABLE = "public.orders"


def _transactions(pg_db) -> list[int]:
    """The backlog: small transactions, one interleaved with others, one far larger than the cap; their sizes."""
    sizes = []
    with pg_db.connect() as conn, pg_db.connect() as other:
        for low in range(1, 2001, 200):  # 10 transactions of 200 inserts
            conn.execute(
                "INSERT INTO orders SELECT g, g, 'o' || g FROM generate_series(%s::int, %s::int) g",
                (low, low + 199),
            )
            sizes.append(200)
        # one transaction open while four others commit: its changes come first in the WAL, its commit last
        other.autocommit = False
        other.execute("UPDATE orders SET qty = qty + 1000 WHERE id <= 100")
        for low in range(2001, 2801, 200):
            conn.execute(
                "INSERT INTO orders SELECT g, g, 'o' || g FROM generate_series(%s::int, %s::int) g",
                (low, low + 199),
            )
            sizes.append(200)
        other.execute("DELETE FROM orders WHERE id BETWEEN 101 AND 150")
        other.commit()
        sizes.append(150)
        # a transaction of ~2.5 MB of WAL, 25 caps: it lands whole in one batch, the ranges inside it are empty
        conn.execute(
            "INSERT INTO orders SELECT g, g, repeat('x', 40) || g FROM generate_series(20001, 40000) g"
        )
        sizes.append(20_000)
        for low in range(1201, 1801, 200):
            conn.execute("UPDATE orders SET qty = -qty WHERE id BETWEEN %s AND %s", (low, low + 199))
            sizes.append(200)
    return sizes


def _capture_backlog(source, changelog: ChangeLog, pipeline: str, start, current) -> list:
    """Plan and capture as the sensor does: one capped batch after another, each starting at the last end."""
    manifests, checkpoint = [], start
    while checkpoint < current:
        end = bounded_end(checkpoint, current, CAP)
        assert end.value - checkpoint.value <= CAP
        batch_id = batch_id_for(checkpoint, end)
        changelog.write_plan(pipeline, batch_id, checkpoint, end)
        manifests.append(
            capture_range(
                source,
                changelog,
                pipeline,
                checkpoint,
                end,
                batch_id=batch_id,
                tables=source.table_schemas().values(),
            )
        )  # as the Dagster capture does
        checkpoint = manifests[-1].end
    return manifests


def _versions_per_batch(changelog: ChangeLog, pipeline: str, manifests) -> list[Counter]:
    """Each batch's changes counted by transaction (``_dbmazz_version`` is the commit LSN)."""
    out = []
    for manifest in manifests:
        batch = changelog.read_batch(pipeline, manifest.batch_id, TABLE)
        counts: Counter = Counter()
        for rows in batch.rows():
            for item in pc.value_counts(rows.data.column("_dbmazz_version")).to_pylist():
                counts[item["values"]] += item["counts"]
        out.append(counts)
    return out


def _assert_whole_transactions(per_batch: list[Counter], sizes: list[int]) -> None:
    seen: Counter = Counter()
    for counts in per_batch:
        for version in counts:
            seen[version] += 1
    split = [v for v, n in seen.items() if n > 1]
    assert not split, f"transactions split across batches: {split}"
    merged = Counter()
    for counts in per_batch:
        merged.update(counts)
    assert sorted(merged.values()) == sorted(sizes), "each transaction whole, once"


def _assert_sink_equals_source(pg_db, tmp_path, changelog: ChangeLog, pipeline: str, manifests) -> None:
    sink = create_sink({"url": f"duckdb:///{tmp_path}/bounded.duckdb", "pipeline": pipeline})
    sink.connect()
    try:
        for manifest in manifests:
            apply_batch(changelog, sink, pipeline, manifest.batch_id)
        state = sink.table_state(TABLE)
        found = sink.con.execute(f"SELECT id, qty, note FROM {sink.target(state)} ORDER BY id").fetchall()
    finally:
        sink.disconnect()
    expected = [(r["id"], r["qty"], r["note"]) for r in source_rows(pg_db, TABLE)]
    assert len(found) == len(expected)
    assert [tuple(r) for r in found] == expected


@pytest.fixture
def orders(pg_db, capture_role):
    with pg_db.connect() as conn:
        conn.execute("CREATE TABLE orders (id int PRIMARY KEY, qty int, note text)")
    capture_role.grant([TABLE])


@pytest.mark.usefixtures("capture_mode", "orders")
def test_a_backlog_becomes_capped_batches_of_whole_transactions(pg_db, capture_role, changelog, tmp_path):
    source = capture_role.source([TABLE])
    source.setup()
    start = source.checkpoint_position()
    sizes = _transactions(pg_db)
    current = source.current_position()
    assert current.value - start.value > 25 * CAP
    manifests = _capture_backlog(source, changelog, "p1", start, current)
    assert len(manifests) > 25, "the backlog became many batches"
    per_batch = _versions_per_batch(changelog, "p1", manifests)
    _assert_whole_transactions(per_batch, sizes)
    large = [i for i, counts in enumerate(per_batch) if 20_000 in counts.values()]
    assert len(large) == 1 and sum(per_batch[large[0]].values()) >= 20_000
    empty = [m for m in manifests if m.rows == 0]
    assert len(empty) >= 20, (
        "the ranges inside the large transaction hold no change, they only move the checkpoint"
    )
    for before, after in zip(manifests, manifests[1:], strict=False):
        assert after.start == before.end, "each batch starts where the last one ended"
    assert source.checkpoint_position() == manifests[-1].end
    source.disconnect()
    assert_folded_equals_source(pg_db, changelog, TABLE)
    _assert_sink_equals_source(pg_db, tmp_path, changelog, "p1", manifests)


# Plans and captures the backlog in a fresh process, as the sensor and the runs do, and dies in the middle of
# the third batch (after a row group of a part was written, before the manifest); the failpoint lives here.
CHILD = """
import json, os, signal, sys
from dbmazz_connectors.changelog import ChangeLog, store
from dbmazz_connectors.core.positions import position_from_dict
from dbmazz_connectors.engine import batch_id_for, bounded_end, capture_range
from dbmazz_connectors.sources.postgres import PostgresSource

spec = json.loads(sys.argv[1])
source = PostgresSource.from_config(spec["config"])
source.connect()
log = ChangeLog(spec["changelog"], part_rows=spec["part_rows"])
checkpoint, current = source.checkpoint_position(), position_from_dict(spec["current"])
write, state = store._Part.write, {"batches": 0}
def write_then_die(self, data):
    write(self, data)
    if state["batches"] == 2:
        os.kill(os.getpid(), signal.SIGKILL)
store._Part.write = write_then_die
while checkpoint < current:
    end = bounded_end(checkpoint, current, spec["cap"])
    batch_id = batch_id_for(checkpoint, end)
    log.write_plan(spec["pipeline"], batch_id, checkpoint, end)
    manifest = capture_range(source, log, spec["pipeline"], checkpoint, end, batch_id=batch_id,
                             tables=source.table_schemas().values())
    state["batches"] += manifest.rows > 0
    checkpoint = manifest.end
print("not killed")
"""


@pytest.mark.usefixtures("orders")
def test_a_capture_killed_in_a_capped_batch_resumes_with_the_same_boundaries(pg_db, capture_role, tmp_path):
    """Two slots at the same position read the same backlog: one uninterrupted, one killed mid-batch and resumed
    from the plan it recorded; both end as the same batches, each equal to the source."""
    whole = capture_role.source([TABLE])
    whole.setup()
    killed = capture_role.source([TABLE], pipeline="p2", publication="dbmazz_p1")
    killed.setup()
    at = max(whole.current_position(), killed.current_position())
    whole.checkpoint(at)
    killed.checkpoint(at)
    assert whole.checkpoint_position() == killed.checkpoint_position() == at
    sizes = _transactions(pg_db)
    current = whole.current_position()
    reference = ChangeLog(str(tmp_path / "reference"), part_rows=500)
    expected = _capture_backlog(whole, reference, "p1", at, current)
    whole.disconnect()

    root = str(tmp_path / "resumed")
    config = {
        "url": capture_role.db.url_as(capture_role.name, capture_role.password),
        "pipeline": "p2",
        "publication": "dbmazz_p1",
        "tables": [TABLE],
        "capture_mode": capture_role.mode,
    }
    spec = {
        "config": config,
        "pipeline": "p2",
        "changelog": root,
        "part_rows": 500,
        "cap": CAP,
        "current": current.to_dict(),
    }
    run_until_killed(CHILD, spec)
    log = ChangeLog(root, part_rows=500)
    done = log.batches("p2")
    planned = sorted(os.listdir(os.path.join(root, "p2", "_plans")))
    assert len(planned) == len(done) + 1, "killed in a planned batch, before its manifest"
    unfinished = planned[-1].removesuffix(".json")
    assert log.manifest("p2", unfinished) is None
    assert os.listdir(log.part_dir("p2", TABLE, unfinished)), "the killed batch left a part behind"
    assert killed.checkpoint_position() == done[-1].end, "the slot is where the last complete batch ended"

    # the resume, as the sensor or a streaming run does it: the planned, uncaptured batch first, from its plan
    start, end = log.plan("p2", unfinished)
    again = capture_range(
        killed, log, "p2", start, end, batch_id=unfinished, tables=killed.table_schemas().values()
    )
    manifests = [*done, again]
    manifests += _capture_backlog(killed, log, "p2", manifests[-1].end, current)
    killed.disconnect()
    assert [m.batch_id for m in manifests] == [m.batch_id for m in expected], "the same boundaries"
    assert [m.end for m in manifests] == [m.end for m in expected]
    assert [m.tables[TABLE].ops for m in manifests] == [m.tables[TABLE].ops for m in expected]
    _assert_whole_transactions(_versions_per_batch(log, "p2", manifests), sizes)
    assert_folded_equals_source(pg_db, log, TABLE, pipeline="p2")
    _assert_sink_equals_source(pg_db, tmp_path, log, "p2", manifests)
