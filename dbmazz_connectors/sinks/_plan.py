"""Turning one table's ChangeBatch into ordered apply steps, the same way for every sink.

A batch becomes: schema steps (validated before anything is written), truncate steps and
row steps, each row step compacted per key (last change in source order wins; docs/architecture.md, "The ordering invariant").
Rows that precede a truncate in the same batch are dropped: the truncate removes them anyway.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa

from ..core.batch import ChangeBatch, Rows, SchemaChange, Truncate
from ..core.compaction import compact, conform
from ..core.errors import SchemaChangeError
from ..core.schema import Column, TableSchema
from ..core.types import Kind, LogicalType

__all__ = [
    "RowsStep",
    "SchemaStep",
    "TruncateStep",
    "Step",
    "plan_batch",
    "SchemaDiff",
    "diff_schemas",
    "is_widening",
    "ColumnPlan",
    "reconcile_columns",
]


@dataclass(frozen=True)
class RowsStep:
    schema: TableSchema
    rows: pa.Table  # compacted, conformed to ``schema``; ops: insert/update = upsert, delete = delete


@dataclass(frozen=True)
class TruncateStep:
    version: int  # delete rows with version <= this; later-arriving rows with a lower version are stale


@dataclass(frozen=True)
class SchemaStep:
    old: TableSchema
    new: TableSchema
    diff: SchemaDiff


Step = RowsStep | TruncateStep | SchemaStep


@dataclass(frozen=True)
class SchemaDiff:
    added: tuple[Column, ...]
    dropped: tuple[Column, ...]
    changed: tuple[tuple[Column, Column], ...]  # (old, new) with a different logical type or nullability
    key_changed: bool

    @property
    def empty(self) -> bool:
        return not (self.added or self.dropped or self.changed or self.key_changed)


def diff_schemas(old: TableSchema, new: TableSchema) -> SchemaDiff:
    old_cols = {c.name: c for c in old.columns}
    new_cols = {c.name: c for c in new.columns}
    return SchemaDiff(
        added=tuple(c for c in new.columns if c.name not in old_cols),
        dropped=tuple(c for c in old.columns if c.name not in new_cols),
        changed=tuple(
            (old_cols[c.name], c)
            for c in new.columns
            if c.name in old_cols
            and (old_cols[c.name].type != c.type or old_cols[c.name].nullable != c.nullable)
        ),
        key_changed=old.primary_key != new.primary_key,
    )


_INT_ORDER = [Kind.INT8, Kind.INT16, Kind.INT32, Kind.INT64]


def is_widening(old: LogicalType, new: LogicalType) -> bool:
    """True where every value of ``old`` is a value of ``new`` (a change sinks may follow in place)."""
    if old == new:
        return True
    if old.kind in _INT_ORDER and new.kind in _INT_ORDER:
        return _INT_ORDER.index(old.kind) <= _INT_ORDER.index(new.kind)
    if old.kind in _INT_ORDER and new.kind is Kind.DECIMAL and new.precision is not None:
        digits = {Kind.INT8: 3, Kind.INT16: 5, Kind.INT32: 10, Kind.INT64: 19}[old.kind]
        return new.precision - (new.scale or 0) >= digits
    if old.kind is Kind.FLOAT32 and new.kind is Kind.FLOAT64:
        return True
    if old.kind is Kind.DECIMAL and new.kind is Kind.DECIMAL:
        if new.precision is None:
            return False  # unbounded decimals travel as text: a different physical type
        if old.precision is None:
            return False
        return (new.scale or 0) >= (old.scale or 0) and new.precision - (new.scale or 0) >= old.precision - (
            old.scale or 0
        )
    if old.kind is Kind.ENUM and new.kind is Kind.ENUM:
        return set(old.labels) <= set(new.labels) or not new.labels
    if old.kind is Kind.ENUM and new.kind is Kind.STRING:
        return True
    if old.kind is Kind.ARRAY and new.kind is Kind.ARRAY:
        assert old.element is not None and new.element is not None
        return is_widening(old.element, new.element)
    return False


def plan_batch(batch: ChangeBatch) -> list[Step]:
    """The ordered steps to apply ``batch``; raises SchemaChangeError for a key change before any step runs.

    Sinks check every ``SchemaStep`` against what they support before executing any step, so an
    unsupported change fails with nothing of the batch written.
    """
    steps: list[Step] = []
    schema = batch.schema
    pending: list[pa.Table] = []

    def flush() -> None:
        if pending:
            rows = pa.concat_tables(pending) if len(pending) > 1 else pending[0]
            steps.append(RowsStep(schema, compact(rows, schema.primary_key)))
            pending.clear()

    for event in batch.events:
        if isinstance(event, Rows):
            if event.schema != schema:
                flush()
                steps.append(_schema_step(batch.table, schema, event.schema))
                schema = event.schema
            if event.data.num_rows:
                pending.append(conform(event.data, schema))
        elif isinstance(event, SchemaChange):
            flush()
            if event.schema != schema:
                steps.append(_schema_step(batch.table, schema, event.schema))
            schema = event.schema
        elif isinstance(event, Truncate):
            pending.clear()  # the truncate removes these rows anyway
            steps = [s for s in steps if not isinstance(s, RowsStep)]
            steps.append(TruncateStep(event.version))
    flush()
    return steps


def _schema_step(table: str, old: TableSchema, new: TableSchema) -> SchemaStep:
    diff = diff_schemas(old, new)
    if diff.key_changed:
        raise SchemaChangeError(
            f"the primary key of {table} changed from {list(old.primary_key)} to {list(new.primary_key)}",
            hint="re-snapshot the table into a new sink table",
        )
    return SchemaStep(old, new, diff)


@dataclass(frozen=True)
class ColumnPlan:
    """What a sink table needs to hold rows of ``incoming``, given it holds ``current``.

    ``schema`` is the sink's logical schema afterwards: ``current``'s columns (dropped ones kept,
    types widened) plus the added columns at the end; non-key columns are nullable.
    """

    schema: TableSchema
    added: tuple[Column, ...]
    widened: tuple[tuple[Column, Column], ...]  # (current, new)


def _never_same(a: LogicalType, b: LogicalType) -> bool:
    return False


def reconcile_columns(
    current: TableSchema,
    incoming: TableSchema,
    *,
    sink: str,
    same_native: Callable[[LogicalType, LogicalType], bool] = _never_same,
) -> ColumnPlan:
    """Plan the sink-side change for rows of ``incoming``; raise SchemaChangeError if none exists.

    A column narrower than the sink's (an older batch replayed after a widening) needs nothing.
    ``same_native(a, b)`` tells whether two logical types share the sink's native type, so a
    change between them needs no DDL (enum labels, enum -> string where both are text).
    """
    if current.primary_key != incoming.primary_key:
        raise SchemaChangeError(
            f"{sink}: the primary key of {incoming.qualified_name} is {list(current.primary_key)} in the sink, "
            f"the batch has {list(incoming.primary_key)}",
            hint="re-snapshot the table into a new sink table",
        )
    columns = {c.name: c for c in current.columns}
    added: list[Column] = []
    widened: list[tuple[Column, Column]] = []
    for col in incoming.columns:
        old = columns.get(col.name)
        if old is None:
            new = Column(col.name, col.type, col.name in incoming.primary_key, col.source_type)
            added.append(new)
            columns[col.name] = new
        elif old.type == col.type or is_widening(col.type, old.type):
            continue
        elif is_widening(old.type, col.type) or same_native(old.type, col.type):
            new = Column(old.name, col.type, old.nullable, col.source_type)
            if not same_native(old.type, col.type):
                widened.append((old, new))
            columns[col.name] = new
        else:
            raise SchemaChangeError(
                f"{sink}: column {incoming.qualified_name}.{col.name} changed from {old.type} to {col.type}, "
                "which the sink cannot follow in place",
                hint="re-snapshot the table into a new sink table, or keep the column's type in the source",
            )
    schema = TableSchema(current.schema, current.name, tuple(columns.values()), current.primary_key)
    return ColumnPlan(schema, tuple(added), tuple(widened))
