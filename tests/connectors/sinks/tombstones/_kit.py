"""A change log where keys are inserted, most deleted, and retention then moves the tombstone horizon past them.

Batches (each its own source range, so the horizon is the start of the oldest one kept):

* ``b1`` (0, 1000]: keys 1..200 inserted at version 500;
* ``b2`` (1000, 2000]: keys 1..100 deleted at version 1500;
* ``b3`` (2000, 3000]: keys 101..150 deleted at version 2500;
* ``b4`` (3000, 4000]: keys 201..210 inserted at version 3500.

The source ends with keys 151..210 live: 200 keys inserted, 150 deleted.
"""

from __future__ import annotations

from dbmazz_connectors.changelog import ChangeLog
from dbmazz_connectors.core import OP_DELETE, OP_INSERT, Heartbeat, Rows
from dbmazz_connectors.core.schema import Column, TableSchema
from dbmazz_connectors.core.types import LogicalType
from dbmazz_connectors.sources.postgres.position import Lsn

from .._workload import rows_table

SCHEMA = TableSchema(
    "public",
    "items",
    (Column("id", LogicalType.parse("int64"), False), Column("qty", LogicalType.parse("int32"))),
    ("id",),
)
TABLE = SCHEMA.qualified_name
BATCHES = {
    "b1": (0, 1000, [(OP_INSERT, 500, k) for k in range(1, 201)]),
    "b2": (1000, 2000, [(OP_DELETE, 1500, k) for k in range(1, 101)]),
    "b3": (2000, 3000, [(OP_DELETE, 2500, k) for k in range(101, 151)]),
    "b4": (3000, 4000, [(OP_INSERT, 3500, k) for k in range(201, 211)]),
}
EXPECTED = [(k, k * 10) for k in range(151, 211)]


def write_log(changelog: ChangeLog, pipeline: str = "p") -> list[str]:
    """Stage the four batches; returns their ids in order."""
    for batch_id, (start, end, changes) in BATCHES.items():
        writer = changelog.writer(pipeline, batch_id, Lsn(start))
        writer.declare_table(SCHEMA)
        rows = [(op, version, {"id": k, "qty": k * 10}, None) for op, version, k in changes]
        writer.add(Rows(SCHEMA, rows_table(SCHEMA, rows)))
        writer.add(Heartbeat(Lsn(end)))
        writer.commit()
    return list(BATCHES)
