"""DuckDB ignores identifiers' case: source tables differing only in case still get a sink table each."""

from __future__ import annotations

from dbmazz_connectors.core import OP_INSERT, Column, LogicalType, Rows, TableSchema, create_sink

from .._scenarios import _apply
from .._workload import rows_table

T = LogicalType.parse


def _schema(schema: str, name: str) -> TableSchema:
    return TableSchema(schema, name, (Column("id", T("int64"), False), Column("v", T("string"))), ("id",))


def test_names_differing_in_case_get_distinct_stable_tables(tmp_path):
    path = f"duckdb:///{tmp_path}/s.duckdb"
    tables = [
        _schema("public", "Orders"),
        _schema("public", "orders"),
        _schema("Sales", "t"),
        _schema("sales", "t"),
    ]
    sink = create_sink({"url": path, "pipeline": "p"})
    sink.connect()
    for n, schema in enumerate(tables):
        sink.create_table(schema)
        _apply(
            sink,
            f"b{n}",
            schema,
            Rows(
                schema, rows_table(schema, [(OP_INSERT, 10 + n, {"id": n, "v": schema.qualified_name}, None)])
            ),
        )
    targets = [sink.target(sink.table_state(s.qualified_name)) for s in tables]
    assert targets == [
        '"s"."public"."Orders"',
        '"s"."public"."orders_e9183522"',
        '"s"."Sales"."t"',
        '"s"."sales"."t_4441f274"',
    ], targets  # catalog (the file s.duckdb), schema, table
    for schema, target in zip(tables, targets, strict=True):
        assert sink.fetchall(f"SELECT id, v FROM {target}") == [(tables.index(schema), schema.qualified_name)]
    sink.disconnect()
    sink = create_sink({"url": path, "pipeline": "p"})  # reopened: the same tables
    sink.connect()
    assert [sink.target(sink.table_state(s.qualified_name)) for s in tables] == targets
    sink.disconnect()
