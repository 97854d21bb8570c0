"""A capture killed with SIGKILL while staging or around the slot advance: re-running the range loses and doubles nothing."""

from __future__ import annotations

import os

import pyarrow.parquet as pq
import pytest

from dbmazz_connectors.engine import batch_id_for, capture_range
from tests.fixtures.children import run_until_killed

from ._pg import assert_folded_equals_source, capture

pytestmark = pytest.mark.usefixtures("capture_mode")  # each test in both capture modes (peek, stream)

# Runs capture_range in a fresh process; the failpoint lives here, not in production code.
CHILD = """
import json, os, signal, sys
from dbmazz_connectors.changelog import ChangeLog
from dbmazz_connectors.sources.postgres.position import Lsn
from dbmazz_connectors.engine import capture_range
from dbmazz_connectors.sources.postgres import PostgresSource

spec = json.loads(sys.argv[1])
source = PostgresSource.from_config(spec["config"])
source.connect()
advance = source.checkpoint

def checkpoint(position):
    if spec["kill"] == "after_advance":
        advance(position)
    os.kill(os.getpid(), signal.SIGKILL)

source.checkpoint = checkpoint
if spec["kill"] == "mid_part":  # after the second row group of the first part, before the part is closed
    from dbmazz_connectors.changelog import store
    write, calls = store._Part.write, []
    def write_then_die(self, data):
        write(self, data)
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGKILL)
    store._Part.write = write_then_die
capture_range(source, ChangeLog(spec["changelog"]), "p1", Lsn.parse(spec["start"]), Lsn.parse(spec["end"]))
print("not killed")
"""


def _workload(pg_db, low: int) -> None:
    with pg_db.connect() as conn:
        conn.execute(
            "INSERT INTO orders SELECT g, g * 2, 'o' || g FROM generate_series(%s::int, %s::int) g",
            (low, low + 4999),
        )
        conn.execute("UPDATE orders SET qty = qty + 1 WHERE id % 3 = 0")
        conn.execute("DELETE FROM orders WHERE id % 5 = 0")
        conn.execute("UPDATE orders SET id = id + 1000000 WHERE id = %s", (low + 1,))


def _capture_in_child(capture_role, changelog, start, end, kill: str) -> None:
    config = {
        "url": capture_role.db.url_as(capture_role.name, capture_role.password),
        "pipeline": "p1",
        "tables": ["public.orders"],
        "read_block_rows": 1000,
        "capture_mode": capture_role.mode,
    }
    spec = {"config": config, "changelog": changelog.root, "start": str(start), "end": str(end), "kill": kill}
    run_until_killed(CHILD, spec)


def _parts(changelog, batch_id: str) -> list:
    folder = changelog.part_dir("p1", "public.orders", batch_id)
    return [pq.read_table(os.path.join(folder, name)) for name in sorted(os.listdir(folder))]


@pytest.fixture
def orders_source(pg_db, capture_role):
    with pg_db.connect() as conn:
        conn.execute("CREATE TABLE orders (id int PRIMARY KEY, qty int, note text)")
    capture_role.grant(["public.orders"])
    source = capture_role.source(["public.orders"])
    source.setup()
    yield source
    source.disconnect()


def test_killed_after_staging_before_the_slot_advance(pg_db, capture_role, changelog, orders_source):
    source = orders_source
    _workload(pg_db, 1)
    start, end = source.checkpoint_position(), source.current_position()
    _capture_in_child(capture_role, changelog, start, end, kill="before_advance")
    staged = changelog.manifest("p1", batch_id_for(start, end))
    assert staged is not None, "the batch was staged before the kill"
    assert source.checkpoint_position() == start, "the slot did not move"
    first_parts = _parts(changelog, staged.batch_id)
    # The change log lost the batch too (worst case): re-reading the range gives the same batch.
    changelog.delete_batch("p1", staged.batch_id)
    again = capture_range(source, changelog, "p1", start, end)
    assert again.end == staged.end and again.tables["public.orders"].ops == staged.tables["public.orders"].ops
    assert [t.equals(u) for t, u in zip(_parts(changelog, again.batch_id), first_parts, strict=True)] == [
        True
    ]
    assert source.checkpoint_position() == again.end
    assert_folded_equals_source(pg_db, changelog, "public.orders")


def test_killed_after_the_slot_advance_before_the_caller_records_it(
    pg_db, capture_role, changelog, orders_source
):
    source = orders_source
    _workload(pg_db, 1)
    start, end = source.checkpoint_position(), source.current_position()
    _capture_in_child(capture_role, changelog, start, end, kill="after_advance")
    staged = changelog.manifest("p1", batch_id_for(start, end))
    assert source.checkpoint_position() == staged.end, "the slot moved before the kill"
    # The caller still believes in `start` and re-runs the same range: the staged batch is re-used.
    again = capture_range(source, changelog, "p1", start, end)
    assert again == staged
    assert len(changelog.batches("p1")) == 1
    assert_folded_equals_source(pg_db, changelog, "public.orders")
    _workload(pg_db, 10_001)  # the next range carries on from the advanced slot
    capture(source, changelog)
    assert_folded_equals_source(pg_db, changelog, "public.orders")


def test_killed_mid_part_while_staging(pg_db, capture_role, changelog, orders_source):
    """Row groups are written as they arrive: a kill leaves an unfinished part and no manifest."""
    source = orders_source
    _workload(pg_db, 1)
    start, end = source.checkpoint_position(), source.current_position()
    _capture_in_child(capture_role, changelog, start, end, kill="mid_part")
    batch_id = batch_id_for(start, end)
    assert changelog.manifest("p1", batch_id) is None, "no manifest: the batch does not exist"
    folder = changelog.part_dir("p1", "public.orders", batch_id)
    leftovers = os.listdir(folder)
    assert leftovers == ["part-00000.parquet"]
    with pytest.raises(Exception, match="(?i)parquet"):  # unfinished: no footer
        pq.read_table(os.path.join(folder, leftovers[0]))
    assert source.checkpoint_position() == start, "the slot did not move"
    again = capture_range(source, changelog, "p1", start, end)
    assert again.tables["public.orders"].ops == {"insert": 5001, "update": 1666, "delete": 1001}
    assert [len(t) for t in _parts(changelog, again.batch_id)] == [7668]
    assert source.checkpoint_position() == again.end
    assert_folded_equals_source(pg_db, changelog, "public.orders")
