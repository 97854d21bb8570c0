"""A snapshot taken while a writer hammers the same keys, with CDC around it, applied to every sink.

The source side is pluggable (PostgreSQL, MariaDB); the sink side is the three real sinks. Rows are compared
with the source by primary key, column by column.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal

import pytest

from dbmazz_connectors.changelog import ChangeLog
from dbmazz_connectors.core import BatchRef
from dbmazz_connectors.engine import apply_batch, capture_range
from dbmazz_connectors.snapshots import SnapshotSettings, capture_snapshot_batch, plan_snapshot
from tests.connectors.sinks._workload import assert_sink_equals

ITEMS = ("id", "n", "label", "amount")
PAIRS = ("a", "b", "v")
KEYS = 1200
# 20 writer seeds per source: the first four run in the quick suite, the rest with the slow tests
SEEDS = [pytest.param(seed, marks=() if seed < 4 else pytest.mark.slow) for seed in range(20)]


@dataclass
class Dialect:
    """How the scenario talks to one kind of source database (a DB-API connection factory and its SQL)."""

    connect: Callable
    schema: str  # where the tables are: "public", or the MariaDB database
    upsert_item: str  # (id, n, label, amount)
    pk_update: str  # %(new)s, %(old)s; does nothing where the new key exists
    insert_pair: str  # (a, b); does nothing where the key exists

    @property
    def tables(self) -> list[str]:
        return [f"{self.schema}.items", f"{self.schema}.pairs"]


POSTGRES = dict(
    upsert_item="INSERT INTO items VALUES (%s, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET n = items.n + 1",
    pk_update="UPDATE items SET id = %(new)s WHERE id = %(old)s AND NOT EXISTS (SELECT 1 FROM items WHERE id = %(new)s)",
    insert_pair="INSERT INTO pairs VALUES (%s, %s, 0) ON CONFLICT DO NOTHING",
)
MARIADB = dict(
    upsert_item="INSERT INTO items VALUES (%s, %s, %s, %s) ON DUPLICATE KEY UPDATE n = n + 1",
    pk_update="UPDATE IGNORE items SET id = %(new)s WHERE id = %(old)s",
    insert_pair="INSERT IGNORE INTO pairs VALUES (%s, %s, 0)",
)
SEED_ROWS = [
    "CREATE TABLE items (id int PRIMARY KEY, n int NOT NULL, label varchar(200), amount numeric(10,2))",
    "CREATE TABLE pairs (a varchar(20), b int, v int NOT NULL, PRIMARY KEY (a, b))",
]


def seed_tables(dialect: Dialect) -> None:
    conn = dialect.connect()
    try:
        cur = conn.cursor()
        for statement in SEED_ROWS:
            cur.execute(statement)
        cur.executemany(
            "INSERT INTO items VALUES (%s, %s, %s, %s)",
            [(k, k, f"item {k}", Decimal(k) / 4) for k in range(1, KEYS + 1)],
        )
        cur.executemany(
            "INSERT INTO pairs VALUES (%s, %s, %s)", [(f"k{k % 23}", k, k) for k in range(1, 600)]
        )
        conn.commit()
    finally:
        conn.close()


def writer(dialect: Dialect, seed: int, stop: threading.Event, done: list[int]) -> None:
    """Random multi-statement transactions on the same keys: inserts, updates, deletes, primary-key updates."""
    rng = random.Random(seed)
    conn = dialect.connect()
    try:
        while not stop.is_set():
            cur = conn.cursor()
            for _ in range(rng.randint(1, 4)):
                k = rng.randint(1, KEYS + 200)
                op = rng.random()
                if op < 0.3:
                    cur.execute(dialect.upsert_item, (k, k, f"new {k}", Decimal(k) / 4))
                elif op < 0.55:
                    cur.execute("UPDATE items SET n = n + 1, label = CONCAT(label, 'u') WHERE id = %s", (k,))
                elif op < 0.75:
                    cur.execute("DELETE FROM items WHERE id = %s", (k,))
                elif op < 0.85:
                    cur.execute(dialect.pk_update, {"new": k + 10_000 * rng.randint(1, 9), "old": k})
                else:
                    cur.execute("UPDATE pairs SET v = v + 1 WHERE a = %s", (f"k{k % 23}",))
                    cur.execute("DELETE FROM pairs WHERE a = %s AND b = %s", (f"k{k % 23}", k))
                    cur.execute(dialect.insert_pair, (f"k{k % 29}", -k))
            conn.commit()
            done[0] += 1
    finally:
        conn.close()


def source_rows(dialect: Dialect, table: str, columns: Sequence[str]) -> list[tuple]:
    conn = dialect.connect()
    try:
        cur = conn.cursor()
        cur.execute(f"SELECT {', '.join(columns)} FROM {table}")
        return [tuple(r) for r in cur.fetchall()]
    finally:
        conn.close()


def capture_with_snapshot(
    source, changelog: ChangeLog, dialect: Dialect, seed: int, checkpoint, settings: SnapshotSettings
) -> list[str]:
    """Snapshot both tables while the writer runs, CDC batches captured between snapshot batches."""
    stop, done = threading.Event(), [0]
    thread = threading.Thread(target=writer, args=(dialect, seed, stop, done))
    thread.start()
    try:
        plan = plan_snapshot(source, changelog, "p", dialect.tables, settings, reason="initial load")
        for batch_id in plan.batch_ids():
            checkpoint = capture_range(source, changelog, "p", checkpoint, source.current_position()).end
            capture_snapshot_batch(source, changelog, "p", batch_id, settings)
    finally:
        stop.set()
        thread.join()
    assert done[0] > 5, "the writer should commit while the snapshot is read"
    capture_range(source, changelog, "p", checkpoint, source.current_position())
    return [m.batch_id for m in changelog.batches("p")]


def apply_shuffled(changelog: ChangeLog, sink, batch_ids: list[str], seed: int) -> None:
    """Every batch in a random order; some again, some replayed under a new id (versions alone must hold)."""
    rng = random.Random(seed)
    order = batch_ids[:]
    rng.shuffle(order)
    for batch_id in order:
        apply_batch(changelog, sink, "p", batch_id)
    for batch_id in rng.sample(batch_ids, k=min(3, len(batch_ids))):
        apply_batch(changelog, sink, "p", batch_id)  # already applied: a no-op
        manifest = changelog.manifest("p", batch_id)
        for table in manifest.tables:
            sink.write_batch(changelog.read_batch("p", batch_id, table), BatchRef("p", f"replay-{batch_id}"))


def assert_tables_equal(dialect: Dialect, read_sink: Callable[[str, Sequence[str]], list[tuple]]) -> None:
    """``read_sink(qualified_source_table, columns)`` reads the sink's live rows of that table."""
    for table, columns, key_len in ((dialect.tables[0], ITEMS, 1), (dialect.tables[1], PAIRS, 2)):
        assert_sink_equals(
            read_sink(table, columns), source_rows(dialect, table.split(".")[1], columns), key_len=key_len
        )
