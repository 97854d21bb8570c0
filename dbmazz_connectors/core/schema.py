"""Table schemas: qualified name, ordered columns with logical types, primary key."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from .errors import MissingPrimaryKeyError
from .types import LogicalType

__all__ = [
    "Column",
    "TableSchema",
    "OP_INSERT",
    "OP_UPDATE",
    "OP_DELETE",
    "OP_COLUMN",
    "VERSION_COLUMN",
    "COMMIT_TS_COLUMN",
    "UNKNOWN_COLUMN",
    "META_FIELDS",
    "TYPE_METADATA_KEY",
    "split_qualified",
]

OP_INSERT = 0  # also snapshot rows
OP_UPDATE = 1
OP_DELETE = 2

OP_COLUMN = "_dbmazz_op"
VERSION_COLUMN = "_dbmazz_version"
COMMIT_TS_COLUMN = "_dbmazz_commit_ts"
# Names of the columns whose value the source did not send (an unchanged TOAST value under
# REPLICA IDENTITY DEFAULT); null when every value of the row is known. The value in such a
# column is null and means "unknown: keep what the target already has", never SQL NULL.
UNKNOWN_COLUMN = "_dbmazz_unknown_columns"

META_FIELDS: tuple[pa.Field, ...] = (
    pa.field(OP_COLUMN, pa.int8(), nullable=False),
    pa.field(VERSION_COLUMN, pa.uint64(), nullable=False),
    pa.field(COMMIT_TS_COLUMN, pa.timestamp("us", tz="UTC"), nullable=False),
    pa.field(UNKNOWN_COLUMN, pa.list_(pa.string()), nullable=True),
)

TYPE_METADATA_KEY = b"dbmazz.type"


def split_qualified(name: str, namespace: str = "schema") -> tuple[str, str]:
    """``"public.orders"`` -> ``("public", "orders")``; anything but exactly one dot with two names is a ValueError."""
    parts = name.split(".")
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"expected tables as {namespace}.table, got {name!r}")
    return parts[0], parts[1]


@dataclass(frozen=True)
class Column:
    name: str
    type: LogicalType
    nullable: bool = True
    source_type: str | None = None  # the native type name, for messages and docs

    def arrow_field(self) -> pa.Field:
        return pa.field(
            self.name,
            self.type.to_arrow(),
            nullable=self.nullable,
            metadata={TYPE_METADATA_KEY: str(self.type)},
        )


@dataclass(frozen=True)
class TableSchema:
    """A replicated table. ``schema`` is the namespace (PostgreSQL schema, MySQL database)."""

    schema: str
    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]
    column_index: dict[str, int] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "column_index", {c.name: i for i, c in enumerate(self.columns)})
        missing = [k for k in self.primary_key if k not in self.column_index]
        if missing:
            raise ValueError(f"primary key columns {missing} are not columns of {self.qualified_name}")

    @property
    def qualified_name(self) -> str:
        return f"{self.schema}.{self.name}"

    def column(self, name: str) -> Column:
        return self.columns[self.column_index[name]]

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def require_primary_key(self) -> None:
        if not self.primary_key:
            raise MissingPrimaryKeyError(self.qualified_name)

    def arrow_schema(self, with_meta: bool = True) -> pa.Schema:
        """The Arrow schema of this table's ChangeBatch rows (data columns, then the ``_dbmazz_*`` columns)."""
        fields = [c.arrow_field() for c in self.columns]
        if with_meta:
            fields.extend(META_FIELDS)
        return pa.schema(fields)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "name": self.name,
            "columns": [
                {"name": c.name, "type": str(c.type), "nullable": c.nullable, "source_type": c.source_type}
                for c in self.columns
            ],
            "primary_key": list(self.primary_key),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TableSchema:
        return cls(
            schema=data["schema"],
            name=data["name"],
            columns=tuple(
                Column(c["name"], LogicalType.parse(c["type"]), c.get("nullable", True), c.get("source_type"))
                for c in data["columns"]
            ),
            primary_key=tuple(data["primary_key"]),
        )
