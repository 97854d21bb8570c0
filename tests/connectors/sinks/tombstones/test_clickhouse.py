"""ClickHouse forgets tombstones below the horizon without letting an older row of their key win again."""

import json
import os
import subprocess
import sys

import pytest

from dbmazz_connectors.core import create_sink
from dbmazz_connectors.core.protocols import BatchRef, TombstonePruning
from dbmazz_connectors.engine import apply_batch, tombstone_horizon

from ._kit import EXPECTED, SCHEMA, TABLE, write_log


@pytest.fixture
def config(ch_db):
    return {"url": ch_db.url, "pipeline": "p"}


@pytest.fixture
def sink(config):
    sink = create_sink(config)
    sink.connect()
    yield sink
    sink.disconnect()


def _live(sink) -> list[tuple]:
    data = sink.client.query_arrow("SELECT id, qty FROM items_current ORDER BY id")
    return [tuple(r.values()) for r in data.to_pylist()]


def _stored(sink, deleted: int) -> int:
    """Rows physically kept (every part, no FINAL) with ``_dbmazz_is_deleted = deleted``."""
    return int(sink.query_rows(f"SELECT count() FROM items WHERE _dbmazz_is_deleted = {deleted}")[0][0])


def _apply_all(changelog, sink, ids):
    for batch_id in ids:
        apply_batch(changelog, sink, "p", batch_id)


def test_tombstones_below_the_horizon_go_and_replays_inside_it_still_converge(sink, changelog):
    ids = write_log(changelog)
    _apply_all(changelog, sink, ids)
    assert isinstance(sink, TombstonePruning)
    assert _stored(sink, 1) == 150 and _live(sink) == EXPECTED

    for batch_id in ("b1", "b2"):  # retention: the oldest batches leave the change log
        changelog.delete_batch("p", batch_id)
    horizon = tombstone_horizon(changelog, "p")
    assert horizon == 2000
    assert sink.prune_tombstones(None, horizon) == 100  # keys 1..100, deleted at 1500
    assert _stored(sink, 1) == 50 and _live(sink) == EXPECTED
    assert _stored(sink, 0) == 110  # 60 live + the inserts under the 50 kept tombstones; 1..100 went

    # a batch still in the change log, replayed (as a sink that lost its record would): keys stay deleted
    for batch_id in ("b3", "b4"):
        sink.write_batch(changelog.read_batch("p", batch_id, TABLE), BatchRef("p", batch_id + "-again"))
    assert _live(sink) == EXPECTED

    changelog.delete_batch("p", "b3")
    assert sink.prune_tombstones(TABLE, tombstone_horizon(changelog, "p")) == 50
    assert _stored(sink, 1) == 0 and _stored(sink, 0) == len(EXPECTED) and _live(sink) == EXPECTED
    assert sink.prune_tombstones(None, tombstone_horizon(changelog, "p")) == 0  # nothing left: a no-op


def test_a_prune_sigkilled_between_its_mutations_never_resurrects_and_a_rerun_finishes(
    config, sink, changelog
):
    ids = write_log(changelog)
    _apply_all(changelog, sink, ids)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.connectors.sinks.tombstones._kill_prune",
            json.dumps({"sink": config, "below": 3000, "kill_at": "ALTER TABLE"}),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
    )
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert _live(sink) == EXPECTED  # the older inserts went first; every tombstone still wins
    assert _stored(sink, 0) == len(EXPECTED) and _stored(sink, 1) == 150  # killed between the two
    assert sink.prune_tombstones(None, 3000) == 150
    assert _live(sink) == EXPECTED and _stored(sink, 1) == 0 and _stored(sink, 0) == len(EXPECTED)
    assert sink.row_count(SCHEMA.qualified_name) == len(EXPECTED)
