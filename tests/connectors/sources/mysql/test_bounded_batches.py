"""Bounded batches (``max_batch_bytes``) on MariaDB: a backlog planned as the sensor plans it becomes several
batches, each planned at most the cap of binlog after its start and extended to the next transaction boundary,
so a transaction larger than the cap lands whole in one batch and a cap past a binlog file's end stops at its
rotate; a capture SIGKILLed in a capped batch resumes with the same boundaries, nothing lost or doubled."""

from __future__ import annotations

import os
from collections import Counter

import pyarrow.compute as pc

from dbmazz_connectors.changelog import ChangeLog
from dbmazz_connectors.core import create_sink
from dbmazz_connectors.engine import apply_batch, batch_id_for, bounded_end, capture_range
from dbmazz_connectors.sources.mysql.position import BinlogPosition
from tests.fixtures.children import run_until_killed

from ._my import assert_folded_equals_source, source_rows

CAP = 8 * 1024  # bytes of binlog per batch: the small transactions take 3-6 KB each, the large one ~1 MB


def _transactions(mysql_db) -> list[int]:
    """The backlog: small transactions, a binlog rotation, one transaction far larger than the cap; their sizes."""
    sizes = []
    conn = mysql_db.connect()
    with conn.cursor() as cur:
        for low in range(1, 2001, 200):  # 10 transactions of 200 inserts
            cur.execute(f"INSERT INTO t SELECT seq, seq, CONCAT('o', seq) FROM seq_{low}_to_{low + 199}")
            sizes.append(200)
        cur.execute("FLUSH BINARY LOGS")  # the next file starts: a cap reaching past a file's end stops there
        for low in range(2001, 2801, 200):
            cur.execute(f"INSERT INTO t SELECT seq, seq, CONCAT('o', seq) FROM seq_{low}_to_{low + 199}")
            sizes.append(200)
        cur.execute("BEGIN")  # one transaction of 150 changes over two statements
        cur.execute("UPDATE t SET n = n + 1000 WHERE id <= 100")
        cur.execute("DELETE FROM t WHERE id BETWEEN 101 AND 150")
        cur.execute("COMMIT")
        sizes.append(150)
        # ~1 MB of binlog in one transaction, 60 caps: it lands whole in the batch whose range it starts in
        cur.execute("INSERT INTO t SELECT seq, seq, CONCAT(REPEAT('x', 40), seq) FROM seq_20001_to_40000")
        sizes.append(20_000)
        for low in range(1201, 1801, 200):
            cur.execute(f"UPDATE t SET n = -n WHERE id BETWEEN {low} AND {low + 199}")
            sizes.append(200)
    conn.close()
    return sizes


def _capture_backlog(source, changelog: ChangeLog, start, current, pipeline: str = "p1") -> list:
    """Plan and capture as the sensor does: one capped batch after another, each starting at the last end."""
    manifests, checkpoint = [], start
    while checkpoint < current:
        end = bounded_end(checkpoint, current, CAP)
        assert end.file == checkpoint.file and end.offset - checkpoint.offset <= CAP or end == current
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


def _versions_per_batch(changelog: ChangeLog, table: str, manifests, pipeline: str = "p1") -> list[Counter]:
    """Each batch's changes counted by transaction (``_dbmazz_version`` is the commit event's position)."""
    out = []
    for manifest in manifests:
        counts: Counter = Counter()
        for rows in changelog.read_batch(pipeline, manifest.batch_id, table).rows():
            for item in pc.value_counts(rows.data.column("_dbmazz_version")).to_pylist():
                counts[item["values"]] += item["counts"]
        out.append(counts)
    return out


def _assert_whole_transactions(per_batch: list[Counter], sizes: list[int]) -> None:
    seen = Counter(version for counts in per_batch for version in counts)
    assert not [v for v, n in seen.items() if n > 1], "a transaction split across batches"
    merged: Counter = Counter()
    for counts in per_batch:
        merged.update(counts)
    assert sorted(merged.values()) == sorted(sizes), "each transaction whole, once"


def _assert_sink_equals_source(
    mysql_db, tmp_path, changelog: ChangeLog, manifests, pipeline: str = "p1"
) -> None:
    sink = create_sink({"url": f"duckdb:///{tmp_path}/bounded_{pipeline}.duckdb", "pipeline": pipeline})
    sink.connect()
    try:
        for manifest in manifests:
            apply_batch(changelog, sink, pipeline, manifest.batch_id)
        state = sink.table_state(f"{mysql_db.name}.t")
        found = sink.con.execute(f"SELECT id, n, note FROM {sink.target(state)} ORDER BY id").fetchall()
    finally:
        sink.disconnect()
    expected = [(r["id"], r["n"], r["note"]) for r in source_rows(mysql_db, "t")]
    assert len(found) == len(expected)
    assert [tuple(r) for r in found] == expected


def _table(mysql_db) -> None:
    conn = mysql_db.connect()
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE t (id INT PRIMARY KEY, n INT, note VARCHAR(80))")
    conn.close()


def test_a_backlog_becomes_capped_batches_of_whole_transactions(mysql_db, make_source, changelog, tmp_path):
    _table(mysql_db)
    source = make_source(["t"])
    start = source.current_position()
    sizes = _transactions(mysql_db)
    current = source.current_position()
    assert current.file != start.file
    manifests = _capture_backlog(source, changelog, start, current)
    assert len(manifests) >= 6, "the backlog became several batches"
    per_batch = _versions_per_batch(changelog, f"{mysql_db.name}.t", manifests)
    _assert_whole_transactions(per_batch, sizes)
    large = [m for m, counts in zip(manifests, per_batch, strict=True) if 20_000 in counts.values()]
    assert len(large) == 1
    _, planned_end = changelog.plan("p1", large[0].batch_id)
    assert isinstance(planned_end, BinlogPosition) and planned_end.offset - large[0].start.offset <= CAP
    assert large[0].end.offset - large[0].start.offset > 50 * CAP, (
        "the large transaction extended its batch past the cap, to its commit"
    )
    rotated = [m for m in manifests if m.end.file != m.start.file]
    assert [(m.end.file, m.end.offset) for m in rotated] == [(current.file, 4)], (
        "a cap stops at the file's end"
    )
    for before, after in zip(manifests, manifests[1:], strict=False):
        assert after.start == before.end, "each batch starts where the last one ended"
    assert_folded_equals_source(mysql_db, changelog, "t")
    _assert_sink_equals_source(mysql_db, tmp_path, changelog, manifests)


# Plans and captures the backlog in a fresh process, as the sensor and the runs do, and dies in the middle of
# the third batch with changes (after a row group of a part was written, before the manifest).
CHILD = """
import json, os, signal, sys
from dbmazz_connectors.changelog import ChangeLog, store
from dbmazz_connectors.core.positions import position_from_dict
from dbmazz_connectors.engine import batch_id_for, bounded_end, capture_range
from dbmazz_connectors.sources.mysql import MySqlSource

spec = json.loads(sys.argv[1])
source = MySqlSource.from_config(spec["config"])
source.connect()
log = ChangeLog(spec["changelog"], part_rows=spec["part_rows"])
checkpoint, current = position_from_dict(spec["start"]), position_from_dict(spec["current"])
write, state = store._Part.write, {"batches": 0}
def write_then_die(self, data):
    write(self, data)
    if state["batches"] == 2:
        os.kill(os.getpid(), signal.SIGKILL)
store._Part.write = write_then_die
while checkpoint < current:
    end = bounded_end(checkpoint, current, spec["cap"])
    batch_id = batch_id_for(checkpoint, end)
    log.write_plan("p1", batch_id, checkpoint, end)
    manifest = capture_range(source, log, "p1", checkpoint, end, batch_id=batch_id,
                             tables=source.table_schemas().values())
    state["batches"] += manifest.rows > 0
    checkpoint = manifest.end
print("not killed")
"""


def test_a_capture_killed_in_a_capped_batch_resumes_with_the_same_boundaries(mysql_db, make_source, tmp_path):
    """The same backlog read twice from the same start (a binlog read is repeatable): once uninterrupted, once
    killed mid-batch and resumed from the plan it recorded; both end as the same batches, equal to the source."""
    _table(mysql_db)
    source = make_source(["t"], chunk_rows=100)
    start = source.current_position()
    sizes = _transactions(mysql_db)
    current = source.current_position()
    expected = _capture_backlog(source, ChangeLog(str(tmp_path / "reference"), part_rows=500), start, current)

    root = str(tmp_path / "resumed")
    c = source.config
    config = {
        "url": f"mysql://{c.user}:{c.password}@{c.host}:{c.port}/{c.database}",
        "pipeline": "p1",
        "tables": list(c.tables),
        "chunk_rows": 100,
    }
    spec = {
        "config": config,
        "changelog": root,
        "part_rows": 500,
        "cap": CAP,
        "start": start.to_dict(),
        "current": current.to_dict(),
    }
    run_until_killed(CHILD, spec)
    log = ChangeLog(root, part_rows=500)
    done = log.batches("p1")
    planned = sorted(os.listdir(os.path.join(root, "p1", "_plans")))
    assert len(planned) == len(done) + 1, "killed in a planned batch, before its manifest"
    unfinished = planned[-1].removesuffix(".json")
    assert log.manifest("p1", unfinished) is None
    assert os.listdir(log.part_dir("p1", f"{mysql_db.name}.t", unfinished)), (
        "the killed batch left a part behind"
    )

    # the resume, as the sensor or a streaming run does it: the planned, uncaptured batch first, from its plan
    first, end = log.plan("p1", unfinished)
    again = capture_range(
        source, log, "p1", first, end, batch_id=unfinished, tables=source.table_schemas().values()
    )
    manifests = [*done, again]
    manifests += _capture_backlog(source, log, again.end, current)
    assert [m.batch_id for m in manifests] == [m.batch_id for m in expected], "the same boundaries"
    assert [m.end for m in manifests] == [m.end for m in expected]
    table = f"{mysql_db.name}.t"
    assert [m.tables[table].ops for m in manifests] == [m.tables[table].ops for m in expected]
    _assert_whole_transactions(_versions_per_batch(log, table, manifests), sizes)
    assert_folded_equals_source(mysql_db, log, "t")
    _assert_sink_equals_source(mysql_db, tmp_path, log, manifests)
