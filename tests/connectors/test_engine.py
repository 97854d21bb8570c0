"""engine.apply_batch: one table's failure does not keep the batch's other tables from being applied."""

from __future__ import annotations

import pytest

from dbmazz_connectors.core import (
    Column,
    DbmazzError,
    Heartbeat,
    LogicalType,
    Rows,
    TableSchema,
    create_sink,
)
from dbmazz_connectors.core.types import Kind
from dbmazz_connectors.engine import apply_batch
from dbmazz_connectors.sources.postgres.position import Lsn
from tests.connectors.sinks._workload import rows_table

INT, TEXT = LogicalType(Kind.INT32), LogicalType(Kind.STRING)


def _schema(name: str) -> TableSchema:
    return TableSchema("public", name, (Column("id", INT, False), Column("v", TEXT, True)), ("id",))


def _stage(changelog, batch_id: str, version: int) -> None:
    writer = changelog.writer("p", batch_id, Lsn(version - 1))
    for name in ("a", "b", "c"):
        schema = _schema(name)
        writer.add(
            Rows(
                schema,
                rows_table(
                    schema, [(0, version, {"id": k, "v": f"{name}{version}"}, None) for k in range(3)]
                ),
            )
        )
    writer.add(Heartbeat(Lsn(version)))
    writer.commit()


def test_a_failing_table_leaves_the_other_tables_applied(changelog, tmp_path):
    sink = create_sink({"url": f"duckdb:///{tmp_path}/sink.duckdb", "pipeline": "p"})
    sink.connect()
    _stage(changelog, "b1", 10)
    apply_batch(changelog, sink, "p", "b1")
    sink.con.execute('ALTER TABLE "public"."b" RENAME TO "b_moved"')  # damaged by hand: b's apply fails
    _stage(changelog, "b2", 20)
    with pytest.raises(DbmazzError) as failure:
        apply_batch(changelog, sink, "p", "b2")
    assert "while applying public.b of batch b2; applied: public.a, public.c" in failure.value.__notes__
    for name in ("a", "c"):  # sorted before and after the failing table: both applied
        assert sink.con.execute(f'SELECT DISTINCT v FROM "public"."{name}"').fetchall() == [(f"{name}20",)]
    sink.con.execute('ALTER TABLE "public"."b_moved" RENAME TO "b"')  # repaired: the re-run applies only b
    results = apply_batch(changelog, sink, "p", "b2")
    assert [t for t, r in results.items() if not r.already_applied] == ["public.b"]
    assert sink.con.execute('SELECT DISTINCT v FROM "public"."b"').fetchall() == [("b20",)]
    sink.disconnect()


def test_a_large_batch_with_a_refused_schema_change_writes_nothing(tmp_path):
    """A batch larger than a segment is applied segment by segment, unless it changes the schema: then it applies
    whole, so a change the sink refuses (a new primary key) fails before any of its rows is written."""
    from dbmazz_connectors.changelog import ChangeLog
    from dbmazz_connectors.core import SchemaChange, SchemaChangeError

    changelog = ChangeLog(str(tmp_path / "log"), part_rows=3, segment_rows=3)  # many small parts and segments
    schema = _schema("t")
    rekeyed = TableSchema("public", "t", schema.columns, ("id", "v"))
    writer = changelog.writer("p", "b1", Lsn(1))
    for low in range(0, 12, 3):
        writer.add(
            Rows(schema, rows_table(schema, [(0, 5, {"id": k, "v": "x"}, None) for k in range(low, low + 3)]))
        )
    writer.add(SchemaChange(rekeyed, 6, "ALTER TABLE t ADD PRIMARY KEY (id, v)"))
    writer.add(Rows(rekeyed, rows_table(rekeyed, [(0, 7, {"id": 99, "v": "y"}, None)])))
    writer.add(Heartbeat(Lsn(8)))
    writer.commit()
    assert len(changelog.segments("p", "b1", "public.t")) > 2
    sink = create_sink({"url": f"duckdb:///{tmp_path}/sink.duckdb", "pipeline": "p"})
    sink.connect()
    with pytest.raises(SchemaChangeError):
        apply_batch(changelog, sink, "p", "b1")
    assert sink.row_count("public.t") == 0  # nothing of the batch, not even its first segments
    sink.disconnect()
