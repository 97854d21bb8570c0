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
        writer.add(Rows(schema, rows_table(schema, [(0, version, {"id": k, "v": f"{name}{version}"}, None)
                                                    for k in range(3)])))
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
