"""The exactly-once apply shared by the transactional SQL sinks (DuckDB, PostgreSQL).

Layout in the sink database:

* the target table ``<schema>.<table>``: the source columns, ``_dbmazz_version``,
  ``_dbmazz_commit_ts``; primary key as in the source; only live rows;
* ``_dbmazz.tables``: per target table (keyed by the target's ``schema.name``) its tombstone
  table, logical schema (JSON) and the highest truncate version applied;
* ``_dbmazz.applied_batches``: one row per applied (pipeline, batch, table), written in the
  same transaction as the data, so a batch is applied exactly once;
* ``_dbmazz."<table>__<hash>"``: tombstones (key + version of the delete), so an older change
  applied later (a snapshot chunk, a replay) cannot resurrect a deleted row.

Per key the change with the highest version wins; on equal versions the later-applied one.
Rows steps are applied by ``_sql_rows.RowMerge``, after the sink's ``out_of_range`` policy
(``_policy.ValueGuard``) has dealt with values the sink cannot hold.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ..core.batch import ChangeBatch
from ..core.errors import DbmazzError, SchemaChangeError, UnmappableTypeError
from ..core.protocols import BatchRef, WriteResult
from ..core.schema import (
    COMMIT_TS_COLUMN,
    VERSION_COLUMN,
    TableSchema,
)
from ..core.types import LogicalType
from ._plan import ColumnPlan, RowsStep, SchemaStep, Step, TruncateStep, plan_batch, reconcile_columns
from ._policy import COUNTERS, OutOfRange, ValueGuard
from ._sql_rows import META_SCHEMA, UNKNOWN_KEY, RowMerge, TableState

__all__ = ["SqlSink", "TableState", "META_SCHEMA", "UNKNOWN_KEY"]


class SqlSink(RowMerge, ABC):
    """Shared algorithm; a subclass provides the connection, quoting, staging and type table."""

    name: str
    types: Any  # a class with native(), same_native(), value_rule(), VERSION

    def __init__(self, pipeline: str, schema: str | None, out_of_range: OutOfRange = OutOfRange.REFUSE) -> None:
        self.pipeline = pipeline
        self.schema_override = schema
        self._states: dict[str, TableState] = {}
        self.guard = ValueGuard(self.name, out_of_range, self.types.value_rule)

    # ---- dialect hooks
    @abstractmethod
    def q(self, *parts: str) -> str:
        """Quote an identifier (dotted parts joined)."""

    @abstractmethod
    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; return the affected row count where known."""

    @abstractmethod
    def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]: ...

    @abstractmethod
    def begin(self) -> None: ...

    @abstractmethod
    def commit(self) -> None: ...

    @abstractmethod
    def rollback(self) -> None: ...

    @abstractmethod
    def stage(self, rows: pa.Table, schema: TableSchema, table: str) -> str:
        """Load ``rows`` into a temporary table of native values (plus the meta columns); return its name."""

    @abstractmethod
    def translate_error(self, exc: Exception, table: str) -> DbmazzError: ...

    def lock_table_state(self, table: str) -> None:
        """Serialise writers of one table inside the transaction (PostgreSQL: a row lock)."""
        return None

    def ensure_schema(self, name: str) -> None:
        self.execute(f"CREATE SCHEMA IF NOT EXISTS {self.q(name)}")

    def alter_type_sql(self, target: str, column: str, native: str) -> str:
        return f"ALTER TABLE {target} ALTER COLUMN {self.q(column)} TYPE {native}"

    def target_key_clause(self, key_columns: str) -> str:
        """The target table's key constraint (after its columns); the apply keeps one row per key either way."""
        return f", PRIMARY KEY ({key_columns})"

    def check_widening(self, plan: ColumnPlan, table: str) -> None:
        """Refuse widenings the sink cannot run in place (before anything is written)."""
        return None

    # ---- metadata
    def ensure_meta(self) -> None:
        v = self.types.VERSION
        self.ensure_schema(META_SCHEMA)
        self.execute(
            f"CREATE TABLE IF NOT EXISTS {self.q(META_SCHEMA, 'tables')} (table_name VARCHAR PRIMARY KEY, "
            "target_schema VARCHAR NOT NULL, target_name VARCHAR NOT NULL, tombstones VARCHAR NOT NULL, "
            f"schema_json VARCHAR NOT NULL, truncated_version {v} NOT NULL)"
        )
        self.execute(
            f"CREATE TABLE IF NOT EXISTS {self.q(META_SCHEMA, 'applied_batches')} (pipeline VARCHAR NOT NULL, "
            "batch_id VARCHAR NOT NULL, table_name VARCHAR NOT NULL, rows_written BIGINT NOT NULL, "
            f"high_water_version {v}, applied_at TIMESTAMPTZ NOT NULL DEFAULT now(), "
            "PRIMARY KEY (pipeline, batch_id, table_name))"
        )

    def table_state(self, table: str) -> TableState | None:
        if table in self._states:
            return self._states[table]
        rows = self.fetchall(
            f"SELECT target_schema, target_name, tombstones, schema_json, truncated_version "
            f"FROM {self.q(META_SCHEMA, 'tables')} WHERE table_name = %s", (self.target_key(table),))
        if not rows:
            return None
        ts, tn, tomb, schema_json, truncated = rows[0]
        state = TableState(table, ts, tn, tomb, TableSchema.from_dict(json.loads(schema_json)), int(truncated))
        self._states[table] = state
        return state

    def target_key(self, table: str) -> str:
        """The sink table a source table ``schema.name`` goes to, as ``schema.name`` (the metadata key)."""
        schema, _, name = table.partition(".")
        return f"{self.schema_override or schema}.{name}"

    def target(self, state: TableState) -> str:
        return self.q(state.target_schema, state.target_name)

    def tomb(self, state: TableState) -> str:
        return self.q(META_SCHEMA, state.tombstones)

    # ---- create
    def create_table(self, schema: TableSchema) -> None:
        """Create the target and tombstone tables and the table's metadata row. Idempotent."""
        schema.require_primary_key()
        if self.table_state(schema.qualified_name) is not None:
            return
        for col in schema.columns:
            self._native(schema.qualified_name, col.name, col.type)
        schema = TableSchema(schema.schema, schema.name, tuple(
            c if c.nullable or c.name in schema.primary_key else type(c)(c.name, c.type, True, c.source_type)
            for c in schema.columns), schema.primary_key)
        state = TableState(schema.qualified_name, self.schema_override or schema.schema, schema.name,
                           _tombstone_name(self.target_key(schema.qualified_name)), schema, 0)
        self.begin()
        try:
            self._create_objects(state)
            self.commit()
        except BaseException as exc:
            self._states.pop(schema.qualified_name, None)
            self.rollback()
            raise self._wrap(exc, schema.qualified_name) from exc

    def _create_objects(self, state: TableState) -> None:
        schema, key = state.schema, state.schema.primary_key
        cols = [f"{self.q(c.name)} {self.types.native(c.type)}{' NOT NULL' if c.name in key else ''}"
                for c in schema.columns]
        pk = ", ".join(self.q(k) for k in key)
        self.ensure_schema(state.target_schema)
        self.execute(
            f"CREATE TABLE IF NOT EXISTS {self.target(state)} ({', '.join(cols)}, "
            f"{self.q(VERSION_COLUMN)} {self.types.VERSION} NOT NULL, {self.q(COMMIT_TS_COLUMN)} TIMESTAMPTZ NOT NULL"
            f"{self.target_key_clause(pk)})"
        )
        key_cols = [f"{self.q(k)} {self.types.native(schema.column(k).type)} NOT NULL" for k in key]
        self.execute(f"CREATE TABLE IF NOT EXISTS {self.tomb(state)} ({', '.join(key_cols)}, "
                     f"{self.q(VERSION_COLUMN)} {self.types.VERSION} NOT NULL, PRIMARY KEY ({pk}))")
        self.execute(
            f"INSERT INTO {self.q(META_SCHEMA, 'tables')} VALUES (%s, %s, %s, %s, %s, 0) ON CONFLICT DO NOTHING",
            (self.target_key(state.table), state.target_schema, state.target_name, state.tombstones,
             json.dumps(schema.to_dict())),
        )

    def _native(self, table: str, column: str, logical: LogicalType) -> str:
        try:
            return self.types.native(logical)
        except KeyError:
            raise UnmappableTypeError(table, column, str(logical), self.name) from None

    # ---- write
    def write_batch(self, batch: ChangeBatch, ref: BatchRef) -> WriteResult:
        """Apply one table's batch exactly once (see the module docstring)."""
        table = batch.table
        if self.table_state(table) is None:
            self.create_table(batch.schema)
        state = self.table_state(table)
        assert state is not None
        # The applied check, the schema check and the table's high-water version are read once each, inside the
        # transaction (after the table's lock): per batch these metadata queries cost as much as a small batch's rows.
        self.begin()
        try:
            self.lock_table_state(table)
            if self._applied(ref, table):
                self.rollback()
                return WriteResult(table, 0, True, self.high_water_version(table))
            planned = self._validate(state, batch)  # before anything of the batch is written
            before = self.high_water_version(table)
            details, rows, state = self._run(state, planned, before)
            high_water = _batch_high_water(batch)
            self.execute(f"INSERT INTO {self.q(META_SCHEMA, 'applied_batches')} (pipeline, batch_id, table_name, "
                         "rows_written, high_water_version) VALUES (%s, %s, %s, %s, %s)",
                         (ref.pipeline, ref.batch_id, self.target_key(table), rows, high_water))
            self.commit()
        except BaseException as exc:
            self._states.pop(table, None)
            self.rollback()
            raise self._wrap(exc, table) from exc
        self._states[table] = state
        after = max((v for v in (before, high_water) if v is not None), default=None)
        return WriteResult(table, rows, False, after, details)

    def _wrap(self, exc: BaseException, table: str) -> BaseException:
        if isinstance(exc, DbmazzError) or not isinstance(exc, Exception):
            return exc
        return self.translate_error(exc, table)

    def is_applied(self, ref: BatchRef, table: str) -> bool:
        return self._applied(ref, table)

    def _applied(self, ref: BatchRef, table: str) -> bool:
        return bool(self.fetchall(
            f"SELECT 1 FROM {self.q(META_SCHEMA, 'applied_batches')} "
            "WHERE pipeline = %s AND batch_id = %s AND table_name = %s",
            (ref.pipeline, ref.batch_id, self.target_key(table))))

    def _validate(self, state: TableState, batch: ChangeBatch) -> list[tuple[ColumnPlan | None, Step | None]]:
        """Every schema change of the batch, checked against the sink before anything is written."""
        planned: list[tuple[ColumnPlan | None, Step | None]] = []
        current = state.schema
        for step in [None, *plan_batch(batch)]:
            incoming = batch.schema if step is None else (
                step.new if isinstance(step, SchemaStep) else step.schema if isinstance(step, RowsStep) else None)
            plan = None
            if incoming is not None:
                for col in incoming.columns:
                    self._native(batch.table, col.name, col.type)
                plan = reconcile_columns(current, incoming, sink=self.name, same_native=self.types.same_native)
                self.check_widening(plan, batch.table)
                current = plan.schema
            planned.append((plan, step))
        return planned

    def _run(self, state: TableState, planned, high_water: int | None) -> tuple[dict[str, int], int, TableState]:
        """Apply the planned steps; ``high_water``: the table's high-water version before this batch."""
        details = {"upserted": 0, "deleted": 0, "stale": 0, "unknown_values_missing": 0, "truncates": 0,
                   "columns_added": 0, "columns_widened": 0, **dict.fromkeys(COUNTERS, 0)}
        rows = 0
        for plan, step in planned:
            if plan is not None and (plan.added or plan.widened or plan.schema != state.schema):
                state = self._alter(state, plan, details)
            if isinstance(step, TruncateStep):
                state = self._truncate(state, step.version)
                details["truncates"] += 1
            elif isinstance(step, RowsStep) and step.rows.num_rows:
                rows += step.rows.num_rows
                self._apply_rows(state, step, details, high_water)
        return details, rows, state

    def _alter(self, state: TableState, plan: ColumnPlan, details: dict[str, int]) -> TableState:
        for col in plan.added:
            self.execute(f"ALTER TABLE {self.target(state)} ADD COLUMN IF NOT EXISTS {self.q(col.name)} "
                         f"{self.types.native(col.type)}")
            details["columns_added"] += 1
        for _old, new in plan.widened:
            native = self.types.native(new.type)
            self.execute(self.alter_type_sql(self.target(state), new.name, native))
            if new.name in state.schema.primary_key:
                self.execute(self.alter_type_sql(self.tomb(state), new.name, native))
            details["columns_widened"] += 1
        self.execute(f"UPDATE {self.q(META_SCHEMA, 'tables')} SET schema_json = %s WHERE table_name = %s",
                     (json.dumps(plan.schema.to_dict()), self.target_key(state.table)))
        return TableState(state.table, state.target_schema, state.target_name, state.tombstones, plan.schema,
                          state.truncated_version)

    def _truncate(self, state: TableState, version: int) -> TableState:
        self.execute(f"DELETE FROM {self.target(state)} WHERE {self.q(VERSION_COLUMN)} <= %s", (version,))
        self.execute(f"DELETE FROM {self.tomb(state)} WHERE {self.q(VERSION_COLUMN)} <= %s", (version,))
        truncated = max(state.truncated_version, version)
        self.execute(f"UPDATE {self.q(META_SCHEMA, 'tables')} SET truncated_version = %s WHERE table_name = %s",
                     (truncated, self.target_key(state.table)))
        return TableState(state.table, state.target_schema, state.target_name, state.tombstones, state.schema,
                          truncated)

    # ---- forgetting tombstones
    def prune_tombstones(self, table: str | None, below_version: int) -> int:
        """Delete tombstones below ``below_version`` (None: of every table); returns how many went.

        Live rows and tombstones are in separate tables, so a deleted key has no other row to win again.
        One transaction per table, under the table's writer lock like a batch; idempotent.
        """
        names = [table] if table is not None else [
            r[0] for r in self.fetchall(f"SELECT table_name FROM {self.q(META_SCHEMA, 'tables')} ORDER BY 1")]
        forgotten = 0
        for name in names:  # a target key ("schema.name") maps to itself, so either kind of name does
            state = self.table_state(name)
            if state is None:
                continue
            self.begin()
            try:
                self.lock_table_state(name)
                forgotten += self.execute(f"DELETE FROM {self.tomb(state)} WHERE {self.q(VERSION_COLUMN)} < %s",
                                          (int(below_version),))
                self.commit()
            except BaseException as exc:
                self.rollback()
                raise self._wrap(exc, name) from exc
        return forgotten

    # ---- reads
    def row_count(self, table: str) -> int:
        """Live rows of the sink table for source table ``table`` (0 if it does not exist yet)."""
        state = self.table_state(table)
        if state is None:
            return 0
        return int(self.fetchall(f"SELECT count(*) FROM {self.target(state)}")[0][0])

    def high_water_version(self, table: str) -> int | None:
        rows = self.fetchall(f"SELECT max(high_water_version) FROM {self.q(META_SCHEMA, 'applied_batches')} "
                             "WHERE table_name = %s", (self.target_key(table),))
        return int(rows[0][0]) if rows and rows[0][0] is not None else None

    def refuse(self, table: str, message: str, hint: str | None = None) -> SchemaChangeError:
        return SchemaChangeError(f"{self.name}: {table}: {message}", hint=hint)


def _tombstone_name(table: str) -> str:
    digest = hashlib.sha1(table.encode()).hexdigest()[:8]
    return f"{table[:40]}__{digest}"


def _batch_high_water(batch: ChangeBatch) -> int | None:
    versions: list[int] = []
    for event in batch.events:
        data = getattr(event, "data", None)
        if data is not None and data.num_rows:
            versions.append(int(pc.max(data.column(VERSION_COLUMN)).as_py()))
        elif getattr(event, "version", None) is not None:
            versions.append(int(event.version))
    return max(versions) if versions else None
