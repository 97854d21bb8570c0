"""Re-syncs: a damaged sink copy is restored while CDC continues; a re-created source table is refused until re-synced."""

from __future__ import annotations

import threading

import pytest

from dbmazz_connectors.core import PreflightError, TableChangedError
from dbmazz_connectors.engine import apply_batch, capture_range
from dbmazz_connectors.snapshots import SnapshotSettings, capture_snapshot_batch, plan_snapshot, run_snapshot

from ._scenario import assert_tables_equal, writer

SETTINGS = SnapshotSettings(chunk_rows=300, chunks_per_batch=2, parallelism=2)


def _damage(name: str, sink) -> None:
    """What a user might do to a sink copy: delete rows, alter rows, insert rows the source never had."""
    if name == "clickhouse":
        target = sink.q("items")
        sink.command(f"DELETE FROM {target} WHERE id BETWEEN 100 AND 160", settings={"mutations_sync": 2})
        sink.command(
            f"ALTER TABLE {target} UPDATE label = 'damaged' WHERE id BETWEEN 200 AND 230",
            settings={"mutations_sync": 2},
        )
        sink.command(
            f"INSERT INTO {target} (id, n, label, amount, _dbmazz_version, _dbmazz_commit_ts, "
            "_dbmazz_is_deleted) SELECT 900000 + number, 0, 'ghost', 1, 1, now64(6), 0 FROM numbers(25)"
        )
        return
    run = sink.con.execute if name == "duckdb" else sink.execute
    target = sink.target(sink.table_state("public.items"))
    run(f"DELETE FROM {target} WHERE id BETWEEN 100 AND 160")
    run(f"UPDATE {target} SET label = 'damaged', n = -1 WHERE id BETWEEN 200 AND 230")
    run(
        f"INSERT INTO {target} (id, n, label, amount, _dbmazz_version, _dbmazz_commit_ts) "
        "SELECT 900000 + g, 0, 'ghost', 1, 1, now() FROM generate_series(1, 25) t(g)"
    )
    if name == "postgres":
        sink.commit()


def _catch_up(source, changelog, checkpoint, sinks):
    manifest = capture_range(source, changelog, "p", checkpoint, source.current_position())
    for sink, _ in sinks.values():
        apply_batch(changelog, sink, "p", manifest.batch_id)
    return manifest.end


def test_resync_restores_a_damaged_sink_copy_while_cdc_continues(pg_scenario, changelog, sinks):
    dialect, source = pg_scenario
    checkpoint = source.checkpoint_position()
    for batch in run_snapshot(
        source, changelog, plan_snapshot(source, changelog, "p", dialect.tables, SETTINGS)
    ):
        for sink, _ in sinks.values():
            apply_batch(changelog, sink, "p", batch.batch_id)
    checkpoint = _catch_up(source, changelog, checkpoint, sinks)
    for name, (sink, _) in sinks.items():
        _damage(name, sink)
        if name == "duckdb":
            sink.con.commit() if hasattr(sink.con, "commit") else None
    stop, done = threading.Event(), [0]
    thread = threading.Thread(target=writer, args=(dialect, 7, stop, done))
    thread.start()
    try:
        plan = plan_snapshot(source, changelog, "p", ["public.items"], SETTINGS, reason="re-sync")
        for batch_id in plan.batch_ids():
            checkpoint = _catch_up(source, changelog, checkpoint, sinks)
            capture_snapshot_batch(source, changelog, "p", batch_id, SETTINGS)
            for sink, _ in sinks.values():
                apply_batch(changelog, sink, "p", batch_id)
    finally:
        stop.set()
        thread.join()
    assert done[0] > 5
    _catch_up(source, changelog, checkpoint, sinks)
    for sink, read in sinks.values():
        assert_tables_equal(dialect, lambda table, columns, sink=sink, read=read: read(sink, table, columns))


def test_a_recreated_table_fails_the_capture_until_resynced(
    pg_db, capture_role, pg_scenario, changelog, sinks
):
    dialect, source = pg_scenario
    checkpoint = source.checkpoint_position()
    duck, read = sinks["duckdb"]
    for batch in run_snapshot(
        source, changelog, plan_snapshot(source, changelog, "p", dialect.tables, SETTINGS)
    ):
        apply_batch(changelog, duck, "p", batch.batch_id)
    with pg_db.connect() as conn:  # what `pgbench -i` does to its tables
        conn.execute("DROP TABLE items")
        conn.execute(
            "CREATE TABLE items (id int PRIMARY KEY, n int NOT NULL, label varchar(200), amount numeric(10,2))"
        )
        conn.execute("INSERT INTO items SELECT g, -g, 'second life', 2 FROM generate_series(1, 50) g")
        conn.execute("GRANT SELECT ON items TO " + capture_role.name)
    with pytest.raises(TableChangedError) as failure:
        capture_range(source, changelog, "p", checkpoint, source.current_position())
    message = str(failure.value)
    assert "public.items was dropped and re-created" in message and "run setup again, then re-sync" in message
    with pytest.raises(TableChangedError, match="no longer exists"):
        with pg_db.connect() as conn:
            conn.execute("ALTER TABLE items RENAME TO items_moved")
        capture_range(source, changelog, "p", checkpoint, source.current_position())
    with pg_db.connect() as conn:
        conn.execute("ALTER TABLE items_moved RENAME TO items")
    changelog.record_table_identities(
        "p", source.table_identities()
    )  # as if the identity check were bypassed:
    with pytest.raises(TableChangedError) as failure:  # the source's own check still refuses (not published)
        capture_range(source, changelog, "p", checkpoint, source.current_position())
    assert 'ALTER PUBLICATION "dbmazz_p" ADD TABLE "public"."items"' in str(failure.value)
    with pytest.raises(PreflightError) as failure:  # the role owns the publication, not the re-created table
        plan_snapshot(source, changelog, "p", ["public.items"], SETTINGS, reason="re-sync")
    fix = failure.value.problems[0].fix
    assert fix == 'as a superuser: ALTER PUBLICATION "dbmazz_p" ADD TABLE "public"."items";'
    with pg_db.connect() as conn:
        conn.execute(fix.split(": ", 1)[1])  # the fix runs as printed
    plan = plan_snapshot(
        source, changelog, "p", ["public.items"], SETTINGS, reason="re-sync"
    )  # sets up, then plans
    for batch in run_snapshot(source, changelog, plan, SETTINGS):
        apply_batch(changelog, duck, "p", batch.batch_id)
    with pg_db.connect() as conn:
        conn.execute("UPDATE items SET n = 7 WHERE id = 3")
    manifest = capture_range(source, changelog, "p", checkpoint, source.current_position())
    apply_batch(changelog, duck, "p", manifest.batch_id)
    assert_tables_equal(dialect, lambda table, columns: read(duck, table, columns))
