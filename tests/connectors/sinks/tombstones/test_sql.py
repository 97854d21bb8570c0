"""DuckDB and PostgreSQL keep tombstones in a table of their own; those below the horizon go in one transaction."""

import pytest

from dbmazz_connectors.core import create_sink
from dbmazz_connectors.core.protocols import BatchRef, TombstonePruning
from dbmazz_connectors.engine import apply_batch, tombstone_horizon

from ._kit import EXPECTED, TABLE, write_log


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
