"""DuckDB and PostgreSQL keep tombstones in a table of their own; those below the horizon go in one transaction."""

import pytest

from dbmazz_connectors.core import OP_DELETE, OP_INSERT, create_sink
from dbmazz_connectors.core.protocols import BatchRef, TombstonePruning
from dbmazz_connectors.engine import apply_batch, tombstone_horizon

from ._kit import EXPECTED, SCHEMA, TABLE, write_log

SCHEMA_FOR_LOCK = SCHEMA


@pytest.fixture(params=["duckdb", "postgres"])
def sink(request, tmp_path):
    url = (
        f"duckdb:///{tmp_path / 'sink.duckdb'}"
        if request.param == "duckdb"
        else request.getfixturevalue("pg_db").sink_url
    )
    sink = create_sink({"url": url, "pipeline": "p"})
    sink.connect()
    yield sink
    sink.disconnect()


def _live(sink) -> list[tuple]:
    return [tuple(r) for r in sink.fetchall("SELECT id, qty FROM public.items ORDER BY id")]


def _tombstones(sink) -> int:
    return int(sink.fetchall(f"SELECT count(*) FROM {sink.tomb(sink.table_state(TABLE))}")[0][0])


def test_tombstones_below_the_horizon_go_and_replays_inside_it_still_converge(sink, changelog):
    for batch_id in write_log(changelog):
        apply_batch(changelog, sink, "p", batch_id)
    assert isinstance(sink, TombstonePruning)
    assert _tombstones(sink) == 150 and _live(sink) == EXPECTED

    for batch_id in ("b1", "b2"):  # retention: the oldest batches leave the change log
        changelog.delete_batch("p", batch_id)
    assert sink.prune_tombstones(None, tombstone_horizon(changelog, "p")) == 100
    assert _tombstones(sink) == 50 and _live(sink) == EXPECTED

    for batch_id in ("b3", "b4"):  # replayed from the change log: the kept tombstones still win
        sink.write_batch(changelog.read_batch("p", batch_id, TABLE), BatchRef("p", batch_id + "-again"))
    assert _live(sink) == EXPECTED

    changelog.delete_batch("p", "b3")
    assert sink.prune_tombstones(TABLE, tombstone_horizon(changelog, "p")) == 50
    assert sink.prune_tombstones(None, tombstone_horizon(changelog, "p")) == 0  # idempotent
    assert _tombstones(sink) == 0 and _live(sink) == EXPECTED


def test_postgres_gives_the_tombstone_files_back_after_a_large_prune(pg_db, changelog):
    """A plain VACUUM would leave the files at their size (the kept tombstones sit at the heap's end, the key
    index never shrinks): after forgetting 30,000 tombstones, 50 left, the tombstone table is rewritten."""
    from dbmazz_connectors.core import Heartbeat, Rows
    from dbmazz_connectors.sources.postgres.position import Lsn

    from .._workload import rows_table

    n = 30_000
    batches = {
        "c1": (0, 1000, [(OP_INSERT, 500, k) for k in range(1, n + 101)]),
        "c2": (1000, 2000, [(OP_DELETE, 1500, k) for k in range(1, n + 1)]),
        "c3": (2000, 3000, [(OP_DELETE, 2500, k) for k in range(n + 1, n + 51)]),
    }
    for batch_id, (start, end, changes) in batches.items():
        writer = changelog.writer("p", batch_id, Lsn(start))
        writer.declare_table(SCHEMA)
        writer.add(
            Rows(
                SCHEMA, rows_table(SCHEMA, [(op, v, {"id": k, "qty": k * 10}, None) for op, v, k in changes])
            )
        )
        writer.add(Heartbeat(Lsn(end)))
        writer.commit()
    sink = create_sink({"url": pg_db.sink_url, "pipeline": "p"})
    sink.connect()
    try:
        for batch_id in batches:
            apply_batch(changelog, sink, "p", batch_id)
        tomb = sink.tomb(sink.table_state(TABLE))
        size = f"SELECT pg_total_relation_size('{tomb}'::regclass)"
        before = int(sink.fetchall(size)[0][0])
        changelog.delete_batch("p", "c1")
        changelog.delete_batch("p", "c2")
        assert sink.prune_tombstones(None, tombstone_horizon(changelog, "p")) == n
        after = int(sink.fetchall(size)[0][0])
        assert _tombstones(sink) == 50
        assert after < before / 10, (before, after)
        expected = [(k, k * 10) for k in range(n + 51, n + 101)]
        assert _live(sink) == expected
        sink.write_batch(
            changelog.read_batch("p", "c3", TABLE), BatchRef("p", "c3-again")
        )  # replay: converges
        assert _live(sink) == expected
    finally:
        sink.disconnect()


def test_postgres_writers_of_a_table_serialise_with_a_schema_override(pg_db):
    """The writer lock is the table's metadata row, keyed by the target name: with ``schema: other`` it must
    still be found (a lock on no row would let two writers interleave)."""
    import psycopg

    sink = create_sink({"url": pg_db.sink_url, "pipeline": "p", "schema": "replica"})
    sink.connect()
    try:
        sink.create_table(SCHEMA_FOR_LOCK)
        sink.begin()
        sink.lock_table_state(SCHEMA_FOR_LOCK.qualified_name)
        with psycopg.connect(pg_db.url, autocommit=True) as other:
            with pytest.raises(psycopg.errors.LockNotAvailable):
                other.execute(
                    "SELECT 1 FROM _dbmazz.tables WHERE table_name = 'replica.items' FOR UPDATE NOWAIT"
                )
        sink.rollback()
    finally:
        sink.disconnect()
