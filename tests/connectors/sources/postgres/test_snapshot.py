"""PostgreSQL snapshots: chunks read while a writer hammers the same keys converge with CDC, row by row."""

from __future__ import annotations

import random
import threading

import pytest

from dbmazz_connectors.core.snapshot import KeyRange
from dbmazz_connectors.snapshots import SnapshotSettings, capture_snapshot_batch, plan_snapshot, run_snapshot

from ._pg import assert_folded_equals_source, capture

TABLES = ["public.items", "public.pairs"]
DDL = """
CREATE TABLE items (id int PRIMARY KEY, n int NOT NULL, label text, at timestamptz, tags int[]);
CREATE TABLE pairs (a text, b int, v numeric(10,2), PRIMARY KEY (a, b));
INSERT INTO items SELECT g, g, 'item ' || g, timestamptz '2024-01-01 00:00:00+00' + g * interval '1 minute',
                         ARRAY[g, g + 1] FROM generate_series(1, 3000) g;
INSERT INTO pairs SELECT 'k' || (g % 37), g, g / 3.0 FROM generate_series(1, 1500) g;
"""


def _writer(db, seed: int, stop: threading.Event, done: list[int]) -> None:
    """Random transactions over the same keys: inserts, updates, deletes, primary-key updates."""
    rng = random.Random(seed)
    with db.connect() as conn:
        while not stop.is_set():
            with conn.transaction():
                for _ in range(rng.randint(1, 5)):
                    k = rng.randint(1, 3600)
                    op = rng.random()
                    if op < 0.3:
                        conn.execute("INSERT INTO items VALUES (%s, %s, 'new', now(), ARRAY[%s]) "
                                     "ON CONFLICT (id) DO UPDATE SET n = items.n + 1", (k, k, k))
                    elif op < 0.6:
                        conn.execute("UPDATE items SET n = n + 1, label = label || 'u' WHERE id = %s", (k,))
                    elif op < 0.8:
                        conn.execute("DELETE FROM items WHERE id = %s", (k,))
                    elif op < 0.9:
                        conn.execute("UPDATE items SET id = %s WHERE id = %s AND NOT EXISTS "
                                     "(SELECT 1 FROM items WHERE id = %s)", (k + 5000, k, k + 5000))
                    else:
                        conn.execute("UPDATE pairs SET v = v + 1 WHERE a = %s", (f"k{k % 37}",))
                        conn.execute("DELETE FROM pairs WHERE a = %s AND b = %s", (f"k{k % 37}", k))
            done[0] += 1


def _set_up(pg_db, capture_role):
    with pg_db.connect() as conn:
        conn.execute(DDL)
    capture_role.grant(TABLES)
    source = capture_role.source(TABLES, read_block_rows=1000, read_block_bytes=1024 * 1024)
    source.setup()
    return source


@pytest.mark.parametrize("seed", range(3))
def test_snapshot_under_concurrent_writer_converges(pg_db, capture_role, changelog, seed):
    source = _set_up(pg_db, capture_role)
    stop, done = threading.Event(), [0]
    writer = threading.Thread(target=_writer, args=(pg_db, seed, stop, done))
    writer.start()
    try:
        settings = SnapshotSettings(chunk_rows=400, chunks_per_batch=3, parallelism=2)
        plan = plan_snapshot(source, changelog, "p1", TABLES, settings, reason="initial load")
        capture(source, changelog)  # CDC interleaves with the chunks
        manifests = run_snapshot(source, changelog, plan, settings)
    finally:
        stop.set()
        writer.join()
    capture(source, changelog)
    assert done[0] > 10, "the writer should have committed transactions during the snapshot"
    assert sum(m.rows for m in manifests) > 3000
    assert manifests[-1].batch_id.endswith("-sweep")
    assert_folded_equals_source(pg_db, changelog, "public.items")
    assert_folded_equals_source(pg_db, changelog, "public.pairs", key="a, b")


def test_snapshot_of_a_key_range_reads_only_that_range(pg_db, capture_role, changelog):
    source = _set_up(pg_db, capture_role)
    settings = SnapshotSettings(chunk_rows=100, chunks_per_batch=50, parallelism=2)
    plan = plan_snapshot(source, changelog, "p1", ["public.items"], settings,
                         key_range=KeyRange(("1000",), ("1500",)))
    assert not plan.sweep and len(plan.batches) == 1 and len(plan.batches[0]) == 5
    manifest = capture_snapshot_batch(source, changelog, "p1", plan.batch_ids()[0], settings)
    assert manifest.tables["public.items"].ops["insert"] == 500
    assert manifest.is_snapshot and changelog.checkpoint("p1") is None
