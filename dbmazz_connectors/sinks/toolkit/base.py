"""``SinkBase``: the exactly-once apply every sink repeats, as one template method with hooks.

``write_batch(batch, ref)`` runs, for one table's batch:

1. the sink table and its state exist (``load_state``, else ``create_table``: ``create_target``);
2. inside ``batch_scope(table)`` (a SQL sink: BEGIN, lock the table's writers, COMMIT or ROLLBACK;
   a sink without transactions: idempotent writes, nothing to open):
3. a batch already recorded (``is_applied``) is skipped: ``already_applied``;
4. planning, before anything of the batch is written: ``plan_batch`` (schema, truncate and compacted rows
   steps), every column's native type (``TypeMapper.check``: unmappable types), the DDL each schema change
   needs (``reconcile_columns``: widening rules; ``check_plan``: what this sink can follow in place), and every
   rows step through the ``out_of_range`` policy (``ValueGuard``: refuse, clamp or null);
5. the steps in order: ``alter_columns`` then ``save_state`` before a step that needs DDL, ``save_state`` then
   ``truncate_rows`` for a truncate, ``write_rows`` for rows (stale rows, tombstones, unknown values);
6. ``record_applied`` with the rows written and the table's high-water version, last.

A sink implements the hooks (``NotImplementedError`` below) and keeps its own reads (``row_count``,
``high_water_version``); docs/adding-connectors.md, "Writing a sink on the toolkit", walks through them.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import ClassVar, Generic, Protocol, TypeVar

import pyarrow as pa
import pyarrow.compute as pc

from ...core.batch import ChangeBatch, Rows, SchemaChange, Truncate
from ...core.protocols import BatchRef, WriteResult
from ...core.schema import VERSION_COLUMN, Column, TableSchema
from .._plan import ColumnPlan, RowsStep, SchemaStep, Step, TruncateStep, plan_batch, reconcile_columns
from .._policy import COUNTERS, OutOfRange, ValueGuard
from .types import TypeMapper

__all__ = ["SinkBase", "SinkState", "PlannedStep", "ApplyContext", "merge_plans", "batch_high_water"]


class SinkState(Protocol):
    """What a sink's (frozen dataclass) table state must carry; sinks add where the table lives."""

    @property
    def table(self) -> str: ...  # the source table, schema.name

    @property
    def schema(self) -> TableSchema: ...  # the sink's logical schema (dropped columns kept, types widened)

    @property
    def truncated_version(self) -> int: ...  # the highest truncate applied: older rows are stale


S = TypeVar("S", bound=SinkState)


@dataclass(frozen=True)
class PlannedStep:
    """One step of a batch, checked: the DDL to run before it (if any), and a rows step's rows after the policy."""

    index: (
        int  # the step's position in ``plan_batch``'s list (stable: sinks derive idempotency tokens from it)
    )
    step: Step | None  # None: only ``alter`` (a schema change at the batch's end)
    alter: ColumnPlan | None = None
    rows: pa.Table | None = None  # a RowsStep's rows, through the ``out_of_range`` policy


@dataclass
class ApplyContext:
    """What the hooks of one ``write_batch`` share."""

    ref: BatchRef
    table: str
    high_water: int | None  # the table's high-water version before this batch
    details: dict[str, int]
    index: int = 0  # the step being applied (see ``PlannedStep.index``)


class SinkBase(ABC, Generic[S]):
    """The write skeleton shared by every sink; subclasses provide ``name``, ``types`` and the hooks."""

    name: ClassVar[str]
    types: ClassVar[type[TypeMapper]]
    # the counters of WriteResult.details (each starts at 0); sinks add theirs
    DETAILS: ClassVar[tuple[str, ...]] = (
        "upserted",
        "stale",
        "unknown_values_missing",
        "truncates",
        "columns_added",
        "columns_widened",
    )

    def __init__(self, out_of_range: OutOfRange = OutOfRange.REFUSE) -> None:
        self._states: dict[str, S] = {}
        self.guard = ValueGuard(self.name, out_of_range, self.types.value_rule)

    # ---- hooks: table state
    @abstractmethod
    def load_state(self, table: str) -> S | None:
        """The stored state of source table ``table`` (None: no sink table yet)."""

    @abstractmethod
    def new_state(self, schema: TableSchema) -> S:
        """The state of a table about to be created for ``schema`` (as ``sink_schema`` made it)."""

    @abstractmethod
    def create_target(self, state: S) -> S:
        """Create the sink table (and tombstones, views) and store ``state``; idempotent. Returns the state stored."""

    @abstractmethod
    def save_state(self, state: S) -> None:
        """Store ``state`` (its schema and truncate version), in the batch's transaction where there is one."""

    # ---- hooks: the apply
    @contextmanager
    def batch_scope(self, table: str) -> Iterator[None]:
        """Around the whole apply of one batch (after the table exists). A transactional sink begins, locks the
        table's writers and commits here (rolling back on an error); the default opens nothing."""
        yield

    @abstractmethod
    def is_applied(self, ref: BatchRef, table: str) -> bool:
        """Whether (``ref``, ``table``) is recorded as applied (read-only)."""

    def applied_and_high_water(self, ref: BatchRef, table: str) -> tuple[bool, int | None]:
        """``is_applied(ref, table)`` and the table's ``high_water_version``; a sink may read both in one query."""
        return self.is_applied(ref, table), self.high_water_version(table)

    @abstractmethod
    def record_applied(self, ctx: ApplyContext, rows_written: int, high_water: int | None) -> None:
        """Record the batch as applied (last, inside the batch's transaction where there is one)."""

    def check_plan(self, plan: ColumnPlan, incoming: TableSchema) -> None:
        """Refuse (SchemaChangeError) a change ``reconcile_columns`` allows but this sink cannot follow in place."""
        return None

    @abstractmethod
    def alter_columns(self, state: S, plan: ColumnPlan) -> None:
        """Add ``plan.added`` and widen ``plan.widened`` columns (idempotent where there is no transaction)."""

    @abstractmethod
    def truncate_rows(self, state: S, version: int) -> None:
        """Remove the rows a truncate at ``version`` removed (``state`` already carries the new truncate version)."""

    @abstractmethod
    def write_rows(self, state: S, step: RowsStep, rows: pa.Table, ctx: ApplyContext) -> int:
        """Write one compacted rows step (``rows``: through the policy; ops: upsert or delete); returns rows written.

        Must handle: rows older than the sink's (``state.truncated_version``, a live row or tombstone of the key
        with a higher version: stale, counted in ``details["stale"]``), deletes (keep a tombstone so an older change
        cannot resurrect the key), unknown values (``_dbmazz_unknown_columns``: keep the sink's value; no live row
        to keep it from: NULL, counted in ``details["unknown_values_missing"]``) and sink columns the rows lack."""

    # ---- shared
    def sink_schema(self, schema: TableSchema) -> TableSchema:
        """The logical schema a new sink table holds: key columns NOT NULL, every other column nullable."""
        columns = tuple(
            Column(c.name, c.type, c.name not in schema.primary_key, c.source_type) for c in schema.columns
        )
        return TableSchema(schema.schema, schema.name, columns, schema.primary_key)

    def table_state(self, table: str) -> S | None:
        if table in self._states:
            return self._states[table]
        state = self.load_state(table)
        if state is not None:
            self._states[table] = state
        return state

    def forget_state(self, table: str) -> None:
        """Drop the cached state (after a failed batch: the stored one is the truth)."""
        self._states.pop(table, None)

    def create_table(self, schema: TableSchema) -> None:
        """Create the sink table for ``schema``. Idempotent."""
        schema.require_primary_key()
        if self.table_state(schema.qualified_name) is not None:
            return
        for col in schema.columns:
            self.types.check(schema.qualified_name, col.name, col.type)
        self._states[schema.qualified_name] = self.create_target(self.new_state(self.sink_schema(schema)))

    def write_batch(self, batch: ChangeBatch, ref: BatchRef) -> WriteResult:
        """Apply one table's batch exactly once (see the module docstring)."""
        table = batch.table
        state = self.table_state(table)
        if state is None:
            self.create_table(batch.schema)
            state = self.table_state(table)
            assert state is not None
        try:
            with self.batch_scope(table):
                applied, before = self.applied_and_high_water(ref, table)
                if applied:
                    return WriteResult(table, 0, True, before)
                details = dict.fromkeys((*self.DETAILS, *COUNTERS), 0)
                # every check before anything of the batch is written
                planned = self.plan(state, batch, details)
                ctx = ApplyContext(ref, table, before, details)
                written, state = self.apply_steps(state, planned, ctx)
                versions = (ctx.high_water, batch_high_water(batch))
                after = max((v for v in versions if v is not None), default=None)
                self.record_applied(ctx, written, after)
        except BaseException:
            self.forget_state(table)  # what the batch changed may be half stored: read it again next time
            raise
        self._states[table] = state
        return WriteResult(table, written, False, after, details)

    def plan(self, state: S, batch: ChangeBatch, details: dict[str, int]) -> list[PlannedStep]:
        """The batch's steps with the DDL each needs and its rows through the policy; raises before any write."""
        table = batch.table
        current = state.schema

        def reconcile(incoming: TableSchema) -> ColumnPlan | None:
            nonlocal current
            for col in incoming.columns:
                self.types.check(table, col.name, col.type)
            plan = reconcile_columns(current, incoming, sink=self.name, same_native=self.types.same_native)
            self.check_plan(plan, incoming)
            if plan.schema == current:
                return None
            current = plan.schema
            return plan

        planned: list[PlannedStep] = []
        alter = reconcile(batch.schema)
        for index, step in enumerate(plan_batch(batch)):
            rows = None
            if isinstance(step, SchemaStep):
                alter = merge_plans(alter, reconcile(step.new))
            elif isinstance(step, RowsStep):
                alter = merge_plans(alter, reconcile(step.schema))
                rows = self.guard.apply(step.rows, step.schema, table, details)
            planned.append(PlannedStep(index, step, alter, rows))
            alter = None
        if alter is not None:
            planned.append(PlannedStep(len(planned), None, alter))
        return planned

    def apply_steps(self, state: S, planned: Sequence[PlannedStep], ctx: ApplyContext) -> tuple[int, S]:
        """Run the planned steps in order; returns (rows written, the state afterwards)."""
        written = 0
        for item in planned:
            ctx.index = item.index
            if item.alter is not None:
                self.alter_columns(state, item.alter)
                state = dataclasses.replace(state, schema=item.alter.schema)  # type: ignore[type-var]
                self.save_state(state)
                ctx.details["columns_added"] += len(item.alter.added)
                ctx.details["columns_widened"] += len(item.alter.widened)
            if isinstance(item.step, TruncateStep):
                state = dataclasses.replace(  # type: ignore[type-var]
                    state, truncated_version=max(state.truncated_version, item.step.version)
                )
                self.save_state(state)
                self.truncate_rows(state, item.step.version)
                ctx.details["truncates"] += 1
            elif isinstance(item.step, RowsStep) and item.rows is not None and item.rows.num_rows:
                written += self.write_rows(state, item.step, item.rows, ctx)
        return written, state

    # ---- forgetting tombstones (the TombstonePruning capability)
    def prune_tombstones(self, table: str | None, below_version: int) -> int:
        """Forget tombstones below ``below_version`` (of ``table``, or of every table); returns how many went."""
        names = [table] if table is not None else self.state_tables()
        forgotten = 0
        for name in names:
            state = self.table_state(name)
            if state is not None:
                forgotten += self.prune_table(state, int(below_version))
        return forgotten

    def state_tables(self) -> list[str]:
        """Every table the sink holds state for (as ``table_state`` takes them)."""
        raise NotImplementedError(f"{self.name}: state_tables")

    def prune_table(self, state: S, below_version: int) -> int:
        """Forget the table's tombstones below ``below_version`` such that no older row can win again."""
        raise NotImplementedError(f"{self.name}: prune_table")

    # ---- reads every sink provides
    @abstractmethod
    def high_water_version(self, table: str) -> int | None: ...

    @abstractmethod
    def row_count(self, table: str) -> int: ...


def merge_plans(first: ColumnPlan | None, second: ColumnPlan | None) -> ColumnPlan | None:
    """Two consecutive column plans as one (the second's schema; both plans' columns)."""
    if first is None or second is None:
        return second or first
    return ColumnPlan(second.schema, first.added + second.added, first.widened + second.widened)


def batch_high_water(batch: ChangeBatch) -> int | None:
    """The highest version a batch carries (rows, truncates and schema changes)."""
    versions: list[int] = []
    for event in batch.events:
        if isinstance(event, Rows):
            if event.data.num_rows:
                versions.append(int(pc.max(event.data.column(VERSION_COLUMN)).as_py()))
        elif isinstance(event, Truncate | SchemaChange):
            versions.append(int(event.version))
    return max(versions) if versions else None
