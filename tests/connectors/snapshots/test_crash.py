"""A snapshot killed with SIGKILL half-way resumes: nothing lost or doubled, complete batches never read again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from dbmazz_connectors.engine import apply_batch, capture_range
from dbmazz_connectors.snapshots import SnapshotSettings, load_plan, plan_snapshot, run_snapshot

from ._scenario import assert_tables_equal

ROOT = Path(__file__).resolve().parents[3]
SETTINGS = SnapshotSettings(chunk_rows=200, chunks_per_batch=2, parallelism=2)

# Runs the snapshot in a fresh process and kills it in the middle of its third batch, after a part was
# written; the failpoint lives here, not in production code.
CHILD = """
import json, os, signal, sys
from dbmazz_connectors.changelog import ChangeLog, store
from dbmazz_connectors.snapshots import SnapshotSettings, load_plan, run_snapshot
from dbmazz_connectors.sources.postgres import PostgresSource

spec = json.loads(sys.argv[1])
source = PostgresSource.from_config(spec["config"])
source.connect()
log = ChangeLog(spec["changelog"])
commit, write, state = store.BatchWriter.commit, store._Part.write, {"batches": 0}
def counting_commit(self, stats=None):
    state["batches"] += 1
    return commit(self, stats)
def write_then_die(self, data):
    write(self, data)
    if state["batches"] == 2:
        os.kill(os.getpid(), signal.SIGKILL)
store.BatchWriter.commit, store._Part.write = counting_commit, write_then_die
run_snapshot(source, log, load_plan(log, "p", spec["snapshot"]), SnapshotSettings(**spec["settings"]))
print("not killed")
"""


def test_a_killed_snapshot_resumes_from_its_first_unfinished_batch(pg_db, capture_role, pg_scenario, changelog,
                                                                     sinks):
    dialect, source = pg_scenario
    checkpoint = source.checkpoint_position()
    plan = plan_snapshot(source, changelog, "p", dialect.tables, SETTINGS)
    config = {"url": capture_role.db.url_as(capture_role.name, capture_role.password), "pipeline": "p",
              "tables": dialect.tables, "read_block_rows": 1000}
    spec = {"config": config, "changelog": changelog.root, "snapshot": plan.snapshot_id,
            "settings": {"chunk_rows": 200, "chunks_per_batch": 2, "parallelism": 2}}
    child = subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec)], cwd=ROOT, capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
    ids = plan.batch_ids()
    done = [changelog.manifest("p", b) for b in ids]
    assert [m is not None for m in done[:3]] == [True, True, False]  # killed in the third batch
    assert os.listdir(changelog.part_dir("p", "public.items", ids[2])) or os.listdir(
        changelog.part_dir("p", "public.pairs", ids[2])), "the killed batch should have left a part behind"
    with pg_db.connect() as conn:  # changes between the crash and the resume
        conn.execute("UPDATE items SET n = n + 100 WHERE id % 9 = 0")
        conn.execute("DELETE FROM items WHERE id % 13 = 0")
    manifests = run_snapshot(source, changelog, load_plan(changelog, "p", plan.snapshot_id), SETTINGS)
    assert [m.created_at for m in manifests[:2]] == [m.created_at for m in done[:2]]  # not read again
    assert [m.batch_id for m in manifests] == ids
    cdc = capture_range(source, changelog, "p", checkpoint, source.current_position())
    for sink, read in sinks.values():
        for batch_id in [*ids, cdc.batch_id]:
            apply_batch(changelog, sink, "p", batch_id)
        assert_tables_equal(dialect, lambda table, columns, sink=sink, read=read: read(sink, table, columns))
