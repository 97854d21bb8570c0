"""The change log stores batches durably and reads back exactly what was written."""

import json

import pytest

from dbmazz_connectors.changelog import ChangeLog
from dbmazz_connectors.core import (
    OP_DELETE,
    OP_INSERT,
    ChangeLogError,
    Heartbeat,
    Rows,
    SchemaChange,
    Truncate,
)
from dbmazz_connectors.core.schema import Column, TableSchema
from dbmazz_connectors.core.types import LogicalType
from dbmazz_connectors.sources.postgres.position import Lsn

from ..core._rows import ORDERS, rows


def _write(log, batch_id="b1"):
    writer = log.writer("p", batch_id, Lsn(100))
    writer.add(Rows(ORDERS, rows(ORDERS, [(OP_INSERT, 200, {"id": 1, "qty": 1, "note": "a"})])))
    writer.add(Truncate(ORDERS.qualified_name, 300, 300_000))
    wider = TableSchema(
        "public", "orders", ORDERS.columns + (Column("extra", LogicalType.of("bool")),), ("id",)
    )
    writer.add(SchemaChange(wider, 300, "ALTER TABLE orders ADD extra bool"))
    writer.add(
        Rows(
            wider,
            rows(wider, [(OP_INSERT, 300, {"id": 2, "qty": 2, "extra": True}), (OP_DELETE, 300, {"id": 2})]),
        )
    )
    writer.add(Heartbeat(Lsn(400)))
    return writer.commit(), wider


def test_batch_round_trips_rows_and_events_in_order(tmp_path):
    log = ChangeLog(str(tmp_path))
    manifest, wider = _write(log)
    assert manifest.end == Lsn(400) and manifest.rows == 3
    assert log.manifest("p", "b1").to_dict() == manifest.to_dict()
    batch = log.read_batch("p", "b1", "public.orders")
    kinds = [type(e).__name__ for e in batch.events]
    assert kinds == ["Rows", "Truncate", "SchemaChange", "Rows"]
    assert batch.events[3].schema == wider
    assert batch.events[3].data["extra"].to_pylist() == [True, None]
    assert batch.final_schema == wider


def test_manifest_is_the_commit_point_and_rewrites_are_idempotent(tmp_path):
    log = ChangeLog(str(tmp_path))
    writer = log.writer("p", "b1", Lsn(1))
    writer.add(Rows(ORDERS, rows(ORDERS, [(OP_INSERT, 2, {"id": 1})])))
    writer._flush("public.orders", writer.tables["public.orders"])  # parts staged, no manifest: a crash here
    assert log.manifest("p", "b1") is None and log.batches("p") == []
    manifest, _ = _write(log)  # the retry removes leftovers and writes the batch again
    assert [m.batch_id for m in log.batches("p")] == ["b1"]
    with pytest.raises(ChangeLogError, match="already complete"):
        log.writer("p", "b1", Lsn(1))
    parts = list((tmp_path / "p" / "public.orders" / "b1").iterdir())
    assert sorted(p.name for p in parts) == ["part-00000.parquet", "part-00001.parquet"]
    on_disk = json.loads((tmp_path / "p" / "_batches" / "b1.json").read_text())
    assert on_disk["end"] == {"kind": "lsn", "lsn": "0/190"}


def test_commit_without_final_position_is_refused(tmp_path):
    writer = ChangeLog(str(tmp_path)).writer("p", "b1", Lsn(1))
    with pytest.raises(ChangeLogError, match="without its final position"):
        writer.commit()


def test_checkpoint_is_the_newest_batch_end_or_idle_record(tmp_path):
    log = ChangeLog(str(tmp_path))
    assert log.checkpoint("p") is None
    _write(log)
    assert log.checkpoint("p") == Lsn(400)
    log.record_idle_checkpoint("p", Lsn(900))
    assert log.checkpoint("p") == Lsn(900)
    log.write_plan("p", "b2", Lsn(900), Lsn(1000))
    assert log.plan("p", "b2") == (Lsn(900), Lsn(1000))
    log.delete_batch("p", "b2")
    assert log.plan("p", "b2") is None


def test_snapshot_rows_written_on_parallel_lanes_all_read_back(tmp_path):
    """Snapshot chunks written side by side from threads (one part per lane) read back complete, no row twice."""
    from concurrent.futures import ThreadPoolExecutor

    log = ChangeLog(
        str(tmp_path), part_rows=250
    )  # small parts: lanes roll over to new parts while others write
    writer = log.writer("p", "snap-1", Lsn(100), kind="snapshot")
    chunks = [
        Rows(
            ORDERS,
            rows(
                ORDERS,
                [(OP_INSERT, 99, {"id": i, "qty": i % 7, "note": f"n{i}"}) for i in range(low, low + 100)],
            ),
        )
        for low in range(0, 2000, 100)
    ]
    with ThreadPoolExecutor(3) as pool:
        list(pool.map(lambda lane: [writer.add_unordered(c, lane) for c in chunks[lane::3]], range(3)))
    writer.add(Heartbeat(Lsn(100)))
    manifest = writer.commit()
    assert manifest.tables["public.orders"].ops["insert"] == 2000
    batch = log.read_batch("p", "snap-1", "public.orders")
    ids = [i for event in batch.events for i in event.data["id"].to_pylist()]
    assert sorted(ids) == list(range(2000))
    files = [e["file"] for e in manifest.tables["public.orders"].entries]
    assert len(files) == len(set(files)) > 3


def test_change_rows_cannot_be_written_out_of_order(tmp_path):
    writer = ChangeLog(str(tmp_path)).writer("p", "b1", Lsn(1))
    with pytest.raises(ChangeLogError, match="only snapshot rows may be written out of order"):
        writer.add_unordered(Rows(ORDERS, rows(ORDERS, [(OP_INSERT, 2, {"id": 1})])), 0)
