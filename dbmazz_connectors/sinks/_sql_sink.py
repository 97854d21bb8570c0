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
The apply is the toolkit's (``toolkit.SinkBase.write_batch``); this class provides its hooks in SQL,
one transaction per batch (``batch_scope``). Rows steps are applied by ``_sql_rows.RowMerge``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from abc import abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pyarrow as pa

from ..core.errors import DbmazzError, SchemaChangeError
from ..core.protocols import BatchRef
from ..core.schema import (
    COMMIT_TS_COLUMN,
    VERSION_COLUMN,
    TableSchema,
)
from ._plan import ColumnPlan, RowsStep
from ._policy import OutOfRange
from ._sql_rows import META_SCHEMA, UNKNOWN_KEY, RowMerge, TableState
from .toolkit.base import ApplyContext, SinkBase

__all__ = ["SqlSink", "TableState", "META_SCHEMA", "UNKNOWN_KEY"]


class SqlSink(RowMerge, SinkBase[TableState]):
    """The toolkit's hooks in SQL; a subclass provides the connection, quoting, staging and type table."""

    DETAILS = (*SinkBase.DETAILS, "deleted")

    def __init__(
        self, pipeline: str, schema: str | None, out_of_range: OutOfRange = OutOfRange.REFUSE
    ) -> None:
        super().__init__(out_of_range)
        self.pipeline = pipeline
        self.schema_override = schema

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

    def load_state(self, table: str) -> TableState | None:
        rows = self.fetchall(
            f"SELECT target_schema, target_name, tombstones, schema_json, truncated_version "
            f"FROM {self.q(META_SCHEMA, 'tables')} WHERE table_name = %s",
            (self.target_key(table),),
        )
        if not rows:
            return None
        ts, tn, tomb, schema_json, truncated = rows[0]
        return TableState(table, ts, tn, tomb, TableSchema.from_dict(json.loads(schema_json)), int(truncated))

    def save_state(self, state: TableState) -> None:
        self.execute(
            f"UPDATE {self.q(META_SCHEMA, 'tables')} SET schema_json = %s, truncated_version = %s "
            "WHERE table_name = %s",
            (json.dumps(state.schema.to_dict()), state.truncated_version, self.target_key(state.table)),
        )

    def state_tables(self) -> list[str]:
        # a target key ("schema.name") maps to itself, so either kind of name does for table_state
        return [
            r[0] for r in self.fetchall(f"SELECT table_name FROM {self.q(META_SCHEMA, 'tables')} ORDER BY 1")
        ]

    def target_key(self, table: str) -> str:
        """The sink table a source table ``schema.name`` goes to, as ``schema.name`` (the metadata key)."""
        schema, _, name = table.partition(".")
        return f"{self.schema_override or schema}.{name}"

    def target(self, state: TableState) -> str:
        return self.q(state.target_schema, state.target_name)

    def tomb(self, state: TableState) -> str:
        return self.q(META_SCHEMA, state.tombstones)

    # ---- create
    def sink_schema(self, schema: TableSchema) -> TableSchema:
        """Non-key columns nullable (key columns as the source has them)."""
        return TableSchema(
            schema.schema,
            schema.name,
            tuple(
                c if c.nullable or c.name in schema.primary_key else dataclasses.replace(c, nullable=True)
                for c in schema.columns
            ),
            schema.primary_key,
        )

    def new_state(self, schema: TableSchema) -> TableState:
        return TableState(
            schema.qualified_name,
            self.schema_override or schema.schema,
            schema.name,
            _tombstone_name(self.target_key(schema.qualified_name)),
            schema,
            0,
        )

    def create_target(self, state: TableState) -> TableState:
        """The target and tombstone tables and the table's metadata row, in one transaction. Idempotent."""
        self.begin()
        try:
            self._create_objects(state)
            self.commit()
        except BaseException as exc:
            self.forget_state(state.table)
            self.rollback()
            raise self._wrap(exc, state.table) from exc
        return self.load_state(state.table) or state  # as stored: a concurrent creator's, or a renamed target

    def _create_objects(self, state: TableState) -> None:
        schema, key = state.schema, state.schema.primary_key
        cols = [
            f"{self.q(c.name)} {self.types.native(c.type)}{' NOT NULL' if c.name in key else ''}"
            for c in schema.columns
        ]
        pk = ", ".join(self.q(k) for k in key)
        self.ensure_schema(state.target_schema)
        self.execute(
            f"CREATE TABLE IF NOT EXISTS {self.target(state)} ({', '.join(cols)}, "
            f"{self.q(VERSION_COLUMN)} {self.types.VERSION} NOT NULL, {self.q(COMMIT_TS_COLUMN)} TIMESTAMPTZ NOT NULL"
            f"{self.target_key_clause(pk)})"
        )
        key_cols = [f"{self.q(k)} {self.types.native(schema.column(k).type)} NOT NULL" for k in key]
        self.execute(
            f"CREATE TABLE IF NOT EXISTS {self.tomb(state)} ({', '.join(key_cols)}, "
            f"{self.q(VERSION_COLUMN)} {self.types.VERSION} NOT NULL, PRIMARY KEY ({pk}))"
        )
        self.execute(
            f"INSERT INTO {self.q(META_SCHEMA, 'tables')} VALUES (%s, %s, %s, %s, %s, 0) ON CONFLICT DO NOTHING",
            (
                self.target_key(state.table),
                state.target_schema,
                state.target_name,
                state.tombstones,
                json.dumps(schema.to_dict()),
            ),
        )

    # ---- the apply's hooks
    @contextmanager
    def batch_scope(self, table: str) -> Iterator[None]:
        """One transaction per batch, after the table's writer lock: the applied check, the schema check and the
        table's high-water version are read once each inside it (per batch these metadata queries cost as much as
        a small batch's rows)."""
        self.begin()
        try:
            self.lock_table_state(table)
            yield
            self.commit()
        except BaseException as exc:
            self.forget_state(table)
            self.rollback()
            raise self._wrap(exc, table) from exc

    def _wrap(self, exc: BaseException, table: str) -> BaseException:
        if isinstance(exc, DbmazzError) or not isinstance(exc, Exception):
            return exc
        return self.translate_error(exc, table)

    def is_applied(self, ref: BatchRef, table: str) -> bool:
        return bool(
            self.fetchall(
                f"SELECT 1 FROM {self.q(META_SCHEMA, 'applied_batches')} "
                "WHERE pipeline = %s AND batch_id = %s AND table_name = %s",
                (ref.pipeline, ref.batch_id, self.target_key(table)),
            )
        )

    def applied_and_high_water(self, ref: BatchRef, table: str) -> tuple[bool, int | None]:
        """One scan of the table's applied batches instead of two queries (a small batch's cost is in such reads)."""
        ((high, applied),) = self.fetchall(
            f"SELECT max(high_water_version), sum(CASE WHEN pipeline = %s AND batch_id = %s THEN 1 ELSE 0 END) "
            f"FROM {self.q(META_SCHEMA, 'applied_batches')} WHERE table_name = %s",
            (ref.pipeline, ref.batch_id, self.target_key(table)),
        )
        return bool(applied), None if high is None else int(high)

    def record_applied(self, ctx: ApplyContext, rows_written: int, high_water: int | None) -> None:
        self.execute(
            f"INSERT INTO {self.q(META_SCHEMA, 'applied_batches')} (pipeline, batch_id, table_name, "
            "rows_written, high_water_version) VALUES (%s, %s, %s, %s, %s)",
            (ctx.ref.pipeline, ctx.ref.batch_id, self.target_key(ctx.table), rows_written, high_water),
        )

    def alter_columns(self, state: TableState, plan: ColumnPlan) -> None:
        for col in plan.added:
            self.execute(
                f"ALTER TABLE {self.target(state)} ADD COLUMN IF NOT EXISTS {self.q(col.name)} "
                f"{self.types.native(col.type)}"
            )
        for _old, new in plan.widened:
            native = self.types.native(new.type)
            self.execute(self.alter_type_sql(self.target(state), new.name, native))
            if new.name in state.schema.primary_key:
                self.execute(self.alter_type_sql(self.tomb(state), new.name, native))

    def truncate_rows(self, state: TableState, version: int) -> None:
        self.execute(f"DELETE FROM {self.target(state)} WHERE {self.q(VERSION_COLUMN)} <= %s", (version,))
        self.execute(f"DELETE FROM {self.tomb(state)} WHERE {self.q(VERSION_COLUMN)} <= %s", (version,))

    def write_rows(self, state: TableState, step: RowsStep, rows: pa.Table, ctx: ApplyContext) -> int:
        self._apply_rows(state, step, rows, ctx.details, ctx.high_water)
        return rows.num_rows

    # ---- forgetting tombstones
    def prune_table(self, state: TableState, below_version: int) -> int:
        """Delete the table's tombstones below ``below_version``, in one transaction under its writer lock.

        Live rows and tombstones are in separate tables, so a deleted key has no other row to win again. Idempotent.
        """
        self.begin()
        try:
            self.lock_table_state(state.table)
            forgotten = self.execute(
                f"DELETE FROM {self.tomb(state)} WHERE {self.q(VERSION_COLUMN)} < %s", (int(below_version),)
            )
            self.commit()
        except BaseException as exc:
            self.rollback()
            raise self._wrap(exc, state.table) from exc
        return forgotten

    # ---- reads
    def row_count(self, table: str) -> int:
        """Live rows of the sink table for source table ``table`` (0 if it does not exist yet)."""
        state = self.table_state(table)
        if state is None:
            return 0
        return int(self.fetchall(f"SELECT count(*) FROM {self.target(state)}")[0][0])

    def high_water_version(self, table: str) -> int | None:
        rows = self.fetchall(
            f"SELECT max(high_water_version) FROM {self.q(META_SCHEMA, 'applied_batches')} "
            "WHERE table_name = %s",
            (self.target_key(table),),
        )
        return int(rows[0][0]) if rows and rows[0][0] is not None else None

    def refuse(self, table: str, message: str, hint: str | None = None) -> SchemaChangeError:
        return SchemaChangeError(f"{self.name}: {table}: {message}", hint=hint)


def _tombstone_name(table: str) -> str:
    digest = hashlib.sha1(table.encode()).hexdigest()[:8]
    return f"{table[:40]}__{digest}"
