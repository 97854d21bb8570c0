"""A snapshot killed with SIGKILL half-way resumes: nothing lost or doubled, complete batches never read again."""

from __future__ import annotations

import os

import pytest

from dbmazz_connectors.changelog import ChangeLog
from dbmazz_connectors.core import create_sink
from dbmazz_connectors.core.protocols import BatchRef
from dbmazz_connectors.engine import apply_batch, capture_range
from dbmazz_connectors.snapshots import SnapshotSettings, load_plan, plan_snapshot, run_snapshot
from tests.fixtures.children import run_until_killed

from ._scenario import assert_tables_equal
from .conftest import _clickhouse_rows, _duckdb_rows, _postgres_rows

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


def test_a_killed_snapshot_resumes_from_its_first_unfinished_batch(
    pg_db, capture_role, pg_scenario, changelog, sinks
):
    dialect, source = pg_scenario
    checkpoint = source.checkpoint_position()
    plan = plan_snapshot(source, changelog, "p", dialect.tables, SETTINGS)
    config = {
        "url": capture_role.db.url_as(capture_role.name, capture_role.password),
        "pipeline": "p",
        "tables": dialect.tables,
        "read_block_rows": 1000,
    }
    spec = {
        "config": config,
        "changelog": changelog.root,
        "snapshot": plan.snapshot_id,
        "settings": {"chunk_rows": 200, "chunks_per_batch": 2, "parallelism": 2},
    }
    run_until_killed(CHILD, spec)
    ids = plan.batch_ids()
    done = [changelog.manifest("p", b) for b in ids]
    assert [m is not None for m in done[:3]] == [True, True, False]  # killed in the third batch
    assert os.listdir(changelog.part_dir("p", "public.items", ids[2])) or os.listdir(
        changelog.part_dir("p", "public.pairs", ids[2])
    ), "the killed batch should have left a part behind"
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


# Applies snapshot batches in a fresh process, a segment at a time, and dies right after the third segment
# was committed to the sink: the batch is half applied.
APPLY_CHILD = """
import json, os, signal, sys
from dbmazz_connectors.changelog import ChangeLog
from dbmazz_connectors.core import create_sink
from dbmazz_connectors.engine import apply_batch

spec = json.loads(sys.argv[1])
log = ChangeLog(spec["changelog"], segment_rows=spec["segment_rows"])
sink = create_sink(spec["sink"])
sink.connect()
write, state = type(sink).write_batch, {"writes": 0}
def write_then_die(self, batch, ref):
    result = write(self, batch, ref)
    state["writes"] += 1
    if state["writes"] == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return result
type(sink).write_batch = write_then_die
for batch_id in spec["batches"]:
    apply_batch(log, sink, "p", batch_id)
print("not killed")
"""


@pytest.mark.parametrize("kind", ["duckdb", "clickhouse", "postgres"])
def test_a_snapshot_apply_killed_between_segments_resumes_without_applying_them_again(
    kind, tmp_path, pg_db, ch_db, pg_scenario, changelog
):
    """A snapshot batch applies a segment at a time (bounded memory); SIGKILL half-way, then a re-run: sink == source."""
    dialect, source = pg_scenario
    checkpoint = source.checkpoint_position()
    settings = SnapshotSettings(chunk_rows=100, chunks_per_batch=6, parallelism=2)
    plan = plan_snapshot(source, changelog, "p", dialect.tables, settings)
    run_snapshot(source, changelog, plan, settings)
    ids = plan.batch_ids()
    url = {
        "duckdb": f"duckdb:///{tmp_path}/crash.duckdb",
        "clickhouse": ch_db.url,
        "postgres": pg_db.sink_url,
    }[kind]
    config = {"url": url, "pipeline": "p", **({"schema": "replica"} if kind == "postgres" else {})}
    spec = {"changelog": changelog.root, "segment_rows": 100, "sink": config, "batches": ids}
    run_until_killed(APPLY_CHILD, spec)
    first = sorted(changelog.manifest("p", ids[0]).tables)[0]
    segments = ChangeLog(changelog.root, segment_rows=100).segments("p", ids[0], first)
    assert len(segments) > 3, "the scenario should give the first batch more segments than the kill point"
    sink = create_sink(config)
    sink.connect()
    try:
        assert not sink.is_applied(BatchRef("p", ids[0]), first), "the killed batch must not count as applied"
        with pg_db.connect() as conn:  # CDC goes on between the crash and the re-run
            conn.execute("UPDATE items SET n = n + 100 WHERE id % 7 = 0")
            conn.execute("DELETE FROM items WHERE id % 11 = 0")
        cdc = capture_range(source, changelog, "p", checkpoint, source.current_position())
        resumed = apply_batch(ChangeLog(changelog.root, segment_rows=100), sink, "p", ids[0])
        total = sum(segment.rows for segment in segments)
        assert 0 < resumed[first].rows_written == total - sum(segment.rows for segment in segments[:3])
        for batch_id in [*ids, cdc.batch_id]:
            apply_batch(changelog, sink, "p", batch_id)
        assert all(
            sink.is_applied(BatchRef("p", b), t) for b in ids for t in changelog.manifest("p", b).tables
        )
        read = {"duckdb": _duckdb_rows, "clickhouse": _clickhouse_rows, "postgres": _postgres_rows}[kind]
        assert_tables_equal(dialect, lambda table, columns: read(sink, table, columns))
    finally:
        sink.disconnect()


@pytest.mark.parametrize("kind", ["duckdb", "clickhouse", "postgres"])
def test_a_change_batch_applied_in_segments_and_killed_half_way_converges_on_re_run(
    kind, tmp_path, pg_db, ch_db, pg_scenario, changelog
):
    """A large CDC batch applies a segment at a time, in order (keys change in several segments); SIGKILL
    after the third segment, then a re-run: sink == source, and the batch equals one applied whole."""
    dialect, source = pg_scenario
    checkpoint = source.checkpoint_position()
    settings = SnapshotSettings(chunk_rows=1000, chunks_per_batch=10, parallelism=2)
    plan = plan_snapshot(source, changelog, "p", dialect.tables, settings)
    run_snapshot(source, changelog, plan, settings)
    with pg_db.connect() as conn:  # every key changes in several row groups of one batch
        for round_ in range(4):
            conn.execute("UPDATE items SET n = n + 1, label = label || %s", (f"-{round_}",))
            conn.execute("DELETE FROM items WHERE id %% 17 = %s", (round_,))
            conn.execute(
                "INSERT INTO items SELECT id, 0, 'back', 1 FROM generate_series(1, 1200) id "
                "ON CONFLICT (id) DO NOTHING"
            )
            conn.execute("UPDATE pairs SET v = v + 1 WHERE b %% 3 = %s", (round_ % 3,))
    cdc = capture_range(source, changelog, "p", checkpoint, source.current_position())
    segments = ChangeLog(changelog.root, segment_rows=100).segments("p", cdc.batch_id, "public.items")
    assert len(segments) > 4, "the batch should span several segments"
    url = {
        "duckdb": f"duckdb:///{tmp_path}/crash.duckdb",
        "clickhouse": ch_db.url,
        "postgres": pg_db.sink_url,
    }[kind]
    config = {"url": url, "pipeline": "p", **({"schema": "replica"} if kind == "postgres" else {})}
    sink = create_sink(config)
    sink.connect()
    for batch_id in plan.batch_ids():
        apply_batch(changelog, sink, "p", batch_id)
    sink.disconnect()
    spec = {"changelog": changelog.root, "segment_rows": 100, "sink": config, "batches": [cdc.batch_id]}
    run_until_killed(APPLY_CHILD, spec)
    sink.connect()
    try:
        assert not sink.is_applied(BatchRef("p", cdc.batch_id), "public.items")
        apply_batch(ChangeLog(changelog.root, segment_rows=100), sink, "p", cdc.batch_id)
        assert all(sink.is_applied(BatchRef("p", cdc.batch_id), t) for t in cdc.tables)
        read = {"duckdb": _duckdb_rows, "clickhouse": _clickhouse_rows, "postgres": _postgres_rows}[kind]
        assert_tables_equal(dialect, lambda table, columns: read(sink, table, columns))
    finally:
        sink.disconnect()
