"""Build small ChangeBatch row tables for core tests."""

import pyarrow as pa

from dbmazz_connectors.core import Column, LogicalType, TableSchema

ORDERS = TableSchema(
    "public",
    "orders",
    (
        Column("id", LogicalType.of("int64"), nullable=False),
        Column("qty", LogicalType.of("int32")),
        Column("note", LogicalType.of("string")),
    ),
    ("id",),
)


def rows(schema: TableSchema, changes: list[tuple]) -> pa.Table:
    """``changes``: (op, version, {col: value}, unknown_columns_or_None)."""
    cols: dict[str, list] = {c.name: [] for c in schema.columns}
    meta: dict[str, list] = {
        "_dbmazz_op": [],
        "_dbmazz_version": [],
        "_dbmazz_commit_ts": [],
        "_dbmazz_unknown_columns": [],
    }
    for op, version, values, *unknown in changes:
        for name in cols:
            cols[name].append(values.get(name))
        meta["_dbmazz_op"].append(op)
        meta["_dbmazz_version"].append(version)
        meta["_dbmazz_commit_ts"].append(version * 1000)
        meta["_dbmazz_unknown_columns"].append(unknown[0] if unknown else None)
    return pa.Table.from_pydict({**cols, **meta}, schema=schema.arrow_schema())
