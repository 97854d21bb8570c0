"""MariaDB: a snapshot read under a concurrent writer, with CDC around it, converges in every sink.

The same scenario as for PostgreSQL: batches applied in a random order, some twice, some replayed under new
ids; each sink equals the source row by row, for 20 writer seeds (four in the quick suite).
"""

from __future__ import annotations

import pymysql
import pytest

from dbmazz_connectors.snapshots import SnapshotSettings

from ._scenario import (
    MARIADB,
    SEEDS,
    Dialect,
    apply_shuffled,
    assert_tables_equal,
    capture_with_snapshot,
    seed_tables,
)


@pytest.mark.parametrize("seed", SEEDS)
def test_snapshot_with_writer_converges_in_every_sink(mysql_db, make_source, changelog, sinks, seed):
    dialect = Dialect(
        connect=lambda: pymysql.connect(**mysql_db.server.connect_kwargs(mysql_db.name)),
        schema=mysql_db.name,
        **MARIADB,
    )
    seed_tables(dialect)
    source = make_source(dialect.tables, read_block_rows=1000)
    start = source.current_position()
    settings = SnapshotSettings(chunk_rows=250, chunks_per_batch=2, parallelism=2)
    batch_ids = capture_with_snapshot(source, changelog, dialect, seed, start, settings)
    assert any(b.endswith("-sweep") for b in batch_ids) and len(batch_ids) > 6
    for n, (sink, read) in enumerate(sinks.values()):
        apply_shuffled(changelog, sink, batch_ids, seed * 10 + n)
        assert_tables_equal(dialect, lambda table, columns, sink=sink, read=read: read(sink, table, columns))
