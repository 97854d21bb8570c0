"""PostgreSQL: a snapshot read under a concurrent writer, with CDC around it, converges in every sink.

Batches (snapshot chunks, the sweep, CDC) are applied in a random order, some twice and some replayed
under new ids: each sink equals the source row by row, for 20 writer seeds (four in the quick suite).
"""

from __future__ import annotations

import pytest

from dbmazz_connectors.snapshots import SnapshotSettings

from ._scenario import (
    SEEDS,
    apply_shuffled,
    assert_tables_equal,
    capture_with_snapshot,
)


@pytest.mark.parametrize("seed", SEEDS)
def test_snapshot_with_writer_converges_in_every_sink(pg_scenario, changelog, sinks, seed):
    dialect, source = pg_scenario
    settings = SnapshotSettings(chunk_rows=250, chunks_per_batch=2, parallelism=2)
    batch_ids = capture_with_snapshot(
        source, changelog, dialect, seed, source.checkpoint_position(), settings
    )
    assert any(b.endswith("-sweep") for b in batch_ids) and len(batch_ids) > 6
    for n, (sink, read) in enumerate(sinks.values()):
        apply_shuffled(changelog, sink, batch_ids, seed * 10 + n)
        assert_tables_equal(dialect, lambda table, columns, sink=sink, read=read: read(sink, table, columns))
