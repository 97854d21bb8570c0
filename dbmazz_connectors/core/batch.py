"""What a source emits and a sink receives: row chunks and table events, grouped into ChangeBatches."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pyarrow as pa

from .positions import SourcePosition
from .schema import OP_COLUMN, OP_DELETE, OP_INSERT, OP_UPDATE, TableSchema

__all__ = [
    "Rows",
    "Truncate",
    "SchemaChange",
    "Heartbeat",
    "ChangeEvent",
    "TableEvent",
    "ChangeBatch",
    "op_counts",
]


@dataclass(frozen=True)
class Rows:
    """Changes of one table in source order, all under ``schema``.

    ``data`` has the schema ``schema.arrow_schema()``: the table's columns, then
    ``_dbmazz_op``, ``_dbmazz_version``, ``_dbmazz_commit_ts``, ``_dbmazz_unknown_columns``.
    A primary-key update arrives as a delete of the old key followed by an insert of the new one.
    """

    schema: TableSchema
    data: pa.Table

    @property
    def table(self) -> str:
        return self.schema.qualified_name


@dataclass(frozen=True)
class Truncate:
    """The table was emptied by a transaction committing at ``version``."""

    table: str
    version: int
    commit_ts_us: int


@dataclass(frozen=True)
class SchemaChange:
    """From this point of the stream on, rows of ``schema.qualified_name`` have ``schema``."""

    schema: TableSchema
    version: int
    ddl: str | None = None  # the statement, where the source knows it

    @property
    def table(self) -> str:
        return self.schema.qualified_name


@dataclass(frozen=True)
class Heartbeat:
    """Everything up to ``position`` has been delivered (the stream's last item carries the range's end)."""

    position: SourcePosition


TableEvent = Rows | Truncate | SchemaChange
ChangeEvent = Rows | Truncate | SchemaChange | Heartbeat


@dataclass(frozen=True)
class ChangeBatch:
    """The changes of one table in one micro-batch, in source order.

    ``schema`` is the table's schema at the start of the batch; ``events`` may change it
    (a SchemaChange) or empty the table (a Truncate) between row chunks. Apply in order.
    """

    table: str
    schema: TableSchema
    events: Sequence[TableEvent]

    def rows(self) -> Iterator[Rows]:
        return (e for e in self.events if isinstance(e, Rows))

    @property
    def row_count(self) -> int:
        return sum(r.data.num_rows for r in self.rows())

    @property
    def final_schema(self) -> TableSchema:
        schema = self.schema
        for event in self.events:
            if isinstance(event, SchemaChange | Rows):
                schema = event.schema
        return schema


def op_counts(data: pa.Table) -> dict[str, int]:
    """Rows per operation in a chunk: ``{"insert": n, "update": n, "delete": n}``."""
    ops = data.column(OP_COLUMN).to_numpy()
    return {
        "insert": int((ops == OP_INSERT).sum()),
        "update": int((ops == OP_UPDATE).sum()),
        "delete": int((ops == OP_DELETE).sum()),
    }
