"""StarRocks (the stand-in) deletes tombstones below the horizon; a Primary Key table has no older row to resurrect."""

import pytest

from dbmazz_connectors.core import create_sink
from dbmazz_connectors.core.protocols import BatchRef, TombstonePruning
from dbmazz_connectors.engine import apply_batch, tombstone_horizon

from ._kit import EXPECTED, TABLE, write_log


@pytest.fixture
def sink(sr_db):
    sink = create_sink({"url": sr_db.url, "pipeline": "p"})
    sink.connect()
    yield sink
    sink.disconnect()


def _live(sink) -> list[tuple]:
    return [
        tuple(r)
        for r in sink.query_rows("SELECT id, qty FROM items WHERE _dbmazz_is_deleted = 0 ORDER BY id")
    ]


def _tombstones(sink) -> int:
    return int(sink.query_rows("SELECT count(*) FROM items WHERE _dbmazz_is_deleted = 1")[0][0])


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
    assert int(sink.query_rows("SELECT count(*) FROM items")[0][0]) == len(EXPECTED)
