"""Batches become ordered, compacted apply steps; unsupported schema changes fail before any step."""

import pytest

from dbmazz_connectors.core import (
    OP_INSERT,
    OP_UPDATE,
    ChangeBatch,
    Rows,
    SchemaChange,
    SchemaChangeError,
    Truncate,
)
from dbmazz_connectors.core.schema import Column, TableSchema
from dbmazz_connectors.core.types import LogicalType
from dbmazz_connectors.sinks._plan import RowsStep, SchemaStep, TruncateStep, is_widening, plan_batch

from ._rows import ORDERS, rows


def test_rows_before_a_truncate_are_dropped_and_the_rest_compacted():
    batch = ChangeBatch(
        "public.orders",
        ORDERS,
        [
            Rows(ORDERS, rows(ORDERS, [(OP_INSERT, 5, {"id": 1, "qty": 1})])),
            Truncate("public.orders", 5, 0),
            Rows(
                ORDERS,
                rows(ORDERS, [(OP_INSERT, 5, {"id": 2, "qty": 1}), (OP_UPDATE, 5, {"id": 2, "qty": 7})]),
            ),
        ],
    )
    steps = plan_batch(batch)
    assert [type(s) for s in steps] == [TruncateStep, RowsStep]
    assert steps[1].rows.to_pydict()["qty"] == [7]


def test_add_column_becomes_a_schema_step_between_row_steps():
    wider = TableSchema("public", "orders", ORDERS.columns + (Column("x", LogicalType.of("int64")),), ("id",))
    batch = ChangeBatch(
        "public.orders",
        ORDERS,
        [
            Rows(ORDERS, rows(ORDERS, [(OP_INSERT, 5, {"id": 1})])),
            SchemaChange(wider, 6),
            Rows(wider, rows(wider, [(OP_INSERT, 6, {"id": 2, "x": 9})])),
        ],
    )
    steps = plan_batch(batch)
    assert [type(s) for s in steps] == [RowsStep, SchemaStep, RowsStep]
    assert [c.name for c in steps[1].diff.added] == ["x"]


def test_primary_key_change_is_refused():
    rekeyed = TableSchema("public", "orders", ORDERS.columns, ("id", "qty"))
    with pytest.raises(SchemaChangeError, match=r"primary key of public.orders changed"):
        plan_batch(ChangeBatch("public.orders", ORDERS, [SchemaChange(rekeyed, 6)]))


@pytest.mark.parametrize(
    "old,new,ok",
    [
        ("int32", "int64", True),
        ("int64", "int32", False),
        ("decimal(10,2)", "decimal(12,2)", True),
        ("decimal(10,2)", "decimal(10,3)", False),
        ("float32", "float64", True),
        ("string", "int64", False),
    ],
)
def test_widening_rules(old, new, ok):
    assert is_widening(LogicalType.parse(old), LogicalType.parse(new)) is ok
