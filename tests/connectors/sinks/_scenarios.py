"""Schema-change, truncate and unknown-value scenarios every sink must pass (run by conformance/).

Each function takes a connected sink and ``read_rows(sink, schema)``, the sink's way of reading the live
rows of a table (``schema``'s columns, in order); without it, the sink's ``fetchall(sql)`` reads ``public.items``.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from dbmazz_connectors.core import (
    OP_INSERT,
    OP_UPDATE,
    BatchRef,
    ChangeBatch,
    Column,
    LogicalType,
    Rows,
    SchemaChange,
    SchemaChangeError,
    TableSchema,
    Truncate,
)

from ._workload import rows_table

__all__ = [
    "widening",
    "refused_change",
    "dropped_column",
    "unknown_without_row",
    "replay_after_truncate",
    "inserts_over_existing_keys",
]

T = LogicalType.parse
BASE = TableSchema(
    "public",
    "items",
    (
        Column("id", T("int64"), False),
        Column("qty", T("int32")),
        Column("price", T("decimal(10,2)")),
        Column("label", T("string")),
    ),
    ("id",),
)


def _with(schema: TableSchema, **types: str) -> TableSchema:
    cols = tuple(
        Column(c.name, T(types[c.name]) if c.name in types else c.type, c.nullable) for c in schema.columns
    )
    return TableSchema(schema.schema, schema.name, cols, schema.primary_key)


def _apply(sink, batch_id: str, schema: TableSchema, *events):
    return sink.write_batch(ChangeBatch(schema.qualified_name, schema, list(events)), BatchRef("p", batch_id))


def _rows(sink, columns="id, qty, price, label", read_rows=None):
    if read_rows is None:
        return sink.fetchall(f"SELECT {columns} FROM public.items ORDER BY id")
    names = [c.strip() for c in columns.split(",")]
    wanted = TableSchema("public", "items", tuple(c for c in BASE.columns if c.name in names), ("id",))
    return sorted(read_rows(sink, wanted))


def widening(sink, read_rows=None) -> None:
    """int32 -> int64 and decimal(10,2) -> decimal(12,2) are followed in place; old rows keep their values."""
    _apply(
        sink,
        "b1",
        BASE,
        Rows(BASE, rows_table(BASE, [(OP_INSERT, 10, {"id": 1, "qty": 5, "price": Decimal("1.50")}, None)])),
    )
    wide = _with(BASE, qty="int64", price="decimal(12,2)")
    result = _apply(
        sink,
        "b2",
        BASE,
        SchemaChange(wide, 20),
        Rows(
            wide,
            rows_table(
                wide, [(OP_INSERT, 20, {"id": 2, "qty": 2**40, "price": Decimal("1234567890.12")}, None)]
            ),
        ),
    )
    assert result.details["columns_widened"] == 2
    assert _rows(sink, read_rows=read_rows) == [
        (1, 5, Decimal("1.50"), None),
        (2, 2**40, Decimal("1234567890.12"), None),
    ]


def refused_change(sink, read_rows=None) -> None:
    """A change the sink cannot follow fails before any row of the batch is written."""
    _apply(sink, "b1", BASE, Rows(BASE, rows_table(BASE, [(OP_INSERT, 10, {"id": 1, "label": "a"}, None)])))
    changed = _with(BASE, label="int64")
    with pytest.raises(SchemaChangeError, match=r"column public.items.label changed from string to int64"):
        _apply(
            sink,
            "b2",
            BASE,
            Rows(BASE, rows_table(BASE, [(OP_INSERT, 20, {"id": 2, "label": "b"}, None)])),
            SchemaChange(changed, 21),
            Rows(changed, rows_table(changed, [(OP_INSERT, 21, {"id": 3, "label": 7}, None)])),
        )
    assert _rows(sink, "id, label", read_rows) == [(1, "a")]
    assert sink.high_water_version("public.items") == 10


def dropped_column(sink, read_rows=None) -> None:
    """A dropped column stays in the sink: old rows keep their value, new rows get NULL."""
    _apply(
        sink, "b1", BASE, Rows(BASE, rows_table(BASE, [(OP_INSERT, 10, {"id": 1, "label": "kept"}, None)]))
    )
    narrow = TableSchema("public", "items", BASE.columns[:3], ("id",))
    _apply(
        sink,
        "b2",
        BASE,
        SchemaChange(narrow, 20),
        Rows(
            narrow,
            rows_table(
                narrow,
                [(OP_INSERT, 20, {"id": 2, "qty": 1}, None), (OP_UPDATE, 20, {"id": 1, "qty": 9}, None)],
            ),
        ),
    )
    assert _rows(sink, "id, qty, label", read_rows) == [(1, 9, "kept"), (2, 1, None)]


def unknown_without_row(sink, read_rows=None) -> None:
    """An update whose value is unknown keeps the sink's value; with no row to keep from, NULL is written and counted."""
    _apply(
        sink,
        "b1",
        BASE,
        Rows(BASE, rows_table(BASE, [(OP_INSERT, 10, {"id": 1, "qty": 1, "label": "big"}, None)])),
    )
    result = _apply(
        sink,
        "b2",
        BASE,
        Rows(
            BASE,
            rows_table(
                BASE,
                [
                    (OP_UPDATE, 20, {"id": 1, "qty": 2}, ["label"]),
                    (OP_UPDATE, 20, {"id": 5, "qty": 3}, ["label"]),
                ],
            ),
        ),
    )
    assert result.details["unknown_values_missing"] == 1
    assert _rows(sink, "id, qty, label", read_rows) == [(1, 2, "big"), (5, 3, None)]


def replay_after_truncate(sink, read_rows=None) -> None:
    """Rows older than an applied truncate are ignored when an old batch is replayed later."""
    old = Rows(BASE, rows_table(BASE, [(OP_INSERT, 10, {"id": 1}, None), (OP_INSERT, 10, {"id": 2}, None)]))
    _apply(sink, "b1", BASE, old)
    result = _apply(
        sink,
        "b2",
        BASE,
        Truncate("public.items", 20, 0),
        Rows(BASE, rows_table(BASE, [(OP_INSERT, 20, {"id": 3}, None)])),
    )
    assert result.details["truncates"] == 1
    replay = _apply(sink, "b1-replayed", BASE, old)
    assert replay.details["stale"] == 2
    assert [r[0] for r in _rows(sink, read_rows=read_rows)] == [3]


def inserts_over_existing_keys(sink, read_rows=None) -> None:
    """Insert-only batches take the sink's append path; keys that exist already (a re-snapshot) still upsert."""
    _apply(
        sink,
        "b1",
        BASE,
        Rows(
            BASE,
            rows_table(
                BASE, [(OP_INSERT, 10, {"id": 1, "qty": 1}, None), (OP_INSERT, 10, {"id": 2, "qty": 2}, None)]
            ),
        ),
    )
    _apply(
        sink,
        "b2",
        BASE,
        Rows(
            BASE,
            rows_table(
                BASE,
                [(OP_INSERT, 20, {"id": 2, "qty": 20}, None), (OP_INSERT, 20, {"id": 3, "qty": 30}, None)],
            ),
        ),
    )
    assert _rows(sink, "id, qty", read_rows) == [(1, 1), (2, 20), (3, 30)]
    assert sink.high_water_version("public.items") == 20
