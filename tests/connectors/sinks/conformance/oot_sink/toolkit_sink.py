"""SqliteToolkitSink: the SQLite example again, written on the sink toolkit (``dbmazz_connectors.sinks.toolkit``).

``SqliteSink`` (sink.py) implements the raw ``Sink`` protocol and runs the apply itself; this one lets
``SinkBase.write_batch`` run it and provides only the hooks, the way docs/adding-connectors.md ("Writing a sink on
the toolkit") describes. Same storage: live rows and tombstones (``_dbmazz_deleted = 1``) in one table keyed by the
source key, versions as 20-digit text, one SQLite transaction per batch (``batch_scope``) holding the rows and the
applied-batch record. Not for production: one writer, row at a time.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from dbmazz_connectors.core import (
    OP_DELETE,
    BatchRef,
    ConfigError,
    LoadingModel,
    Problem,
    SinkCapabilities,
    TableSchema,
)
from dbmazz_connectors.core.types import Kind
from dbmazz_connectors.sinks.toolkit import (
    ApplyContext,
    ColumnPlan,
    OutOfRange,
    RowsStep,
    SinkBase,
    TypeMapper,
    parse_url,
)

from .sink import _META, _decode, _encode, _q, _v

__all__ = ["SqliteToolkitSink"]


class SqliteTypes(TypeMapper):
    """SQLite columns are created untyped and hold any value (encoded by ``_encode``): the "native" names below only
    tell the toolkit which logical types differ (a change between two of them is a widening or refused)."""

    SINK = "sqlite"
    NATIVE = {kind: kind.value for kind in Kind}
    UNBOUNDED_DECIMAL = "decimal"
    VERSION = "TEXT"

    @classmethod
    def decimal(cls, precision: int, scale: int) -> str:
        return f"decimal({precision},{scale})"

    @classmethod
    def array(cls, element: str) -> str:
        return f"array<{element}>"


@dataclass(frozen=True)
class SqliteState:
    table: str
    schema: TableSchema
    truncated_version: int = 0


class SqliteToolkitSink(SinkBase[SqliteState]):
    name = "sqlite"
    types = SqliteTypes
    DETAILS = (*SinkBase.DETAILS, "deleted")

    def __init__(self, path: str, pipeline: str, out_of_range: OutOfRange) -> None:
        super().__init__(out_of_range)
        self.path, self.pipeline = path, pipeline
        self.con: sqlite3.Connection | None = None

    @classmethod
    def from_config(cls, mapping: Mapping[str, Any]) -> SqliteToolkitSink:
        unknown = sorted(set(mapping) - {"url", "pipeline", "out_of_range"})
        if unknown:
            raise ConfigError(
                f"sqlite sink: unknown option {', '.join(unknown)}",
                hint="options: url, pipeline, out_of_range",
            )
        url = parse_url(
            str(mapping.get("url", "")),
            who="sqlite sink",
            schemes={"sqlite"},
            example="sqlite:///path/file.db",
        )
        return cls(
            url.path.removeprefix("/"),
            str(mapping.get("pipeline", "default")),
            OutOfRange.parse(mapping.get("out_of_range", "refuse"), "sqlite"),
        )

    # -- connection ---------------------------------------------------------------------------------------------
    def preflight(self, tables: Sequence[str] = ()) -> list[Problem]:
        folder = os.path.dirname(self.path) or "."
        if os.path.isdir(folder):
            return []
        return [Problem("sqlite.folder", f"expected the folder {folder} to exist", f"mkdir -p {folder}")]

    def connect(self) -> None:
        if self.con is not None:
            return
        problems = self.preflight()
        if problems:
            raise ConfigError(f"sqlite sink: {problems[0].message}", hint=problems[0].fix)
        self.con = sqlite3.connect(self.path, isolation_level=None)  # transactions are ours: BEGIN .. COMMIT
        self.execute(
            "CREATE TABLE IF NOT EXISTS _dbmazz_tables (name TEXT PRIMARY KEY, schema_json TEXT, truncated TEXT)"
        )
        self.execute(
            "CREATE TABLE IF NOT EXISTS _dbmazz_applied (pipeline TEXT, batch_id TEXT, name TEXT, rows INTEGER, "
            "high_water TEXT, PRIMARY KEY (pipeline, batch_id, name))"
        )

    def disconnect(self) -> None:
        if self.con is not None:
            self.con.close()
            self.con = None
        self._states.clear()

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        assert self.con is not None, "connect() first"
        return self.con.execute(sql, params).fetchall()

    def commit(self) -> None:
        assert self.con is not None
        self.con.execute("COMMIT")

    def capabilities(self) -> SinkCapabilities:
        return SinkCapabilities(LoadingModel.TRANSACTIONAL, True, True, True, True)

    # -- the toolkit's hooks: table state -----------------------------------------------------------------------
    def load_state(self, table: str) -> SqliteState | None:
        found = self.execute("SELECT schema_json, truncated FROM _dbmazz_tables WHERE name = ?", (table,))
        if not found:
            return None
        return SqliteState(table, TableSchema.from_dict(json.loads(found[0][0])), int(found[0][1]))

    def new_state(self, schema: TableSchema) -> SqliteState:
        return SqliteState(schema.qualified_name, schema)

    def create_target(self, state: SqliteState) -> SqliteState:
        with self.batch_scope(state.table):
            cols = ", ".join(_q(n) for n in (*state.schema.column_names, *_META))
            key = ", ".join(_q(k) for k in state.schema.primary_key)
            self.execute(f"CREATE TABLE IF NOT EXISTS {_q(state.table)} ({cols}, PRIMARY KEY ({key}))")
            self.execute(
                "INSERT OR IGNORE INTO _dbmazz_tables VALUES (?, ?, ?)",
                (state.table, json.dumps(state.schema.to_dict()), _v(0)),
            )
        return self.load_state(state.table) or state

    def save_state(self, state: SqliteState) -> None:
        self.execute(
            "UPDATE _dbmazz_tables SET schema_json = ?, truncated = ? WHERE name = ?",
            (json.dumps(state.schema.to_dict()), _v(state.truncated_version), state.table),
        )

    # -- the toolkit's hooks: the apply -------------------------------------------------------------------------
    @contextmanager
    def batch_scope(self, table: str) -> Iterator[None]:
        self.execute("BEGIN IMMEDIATE")  # the write lock first: the applied check and the rows see one state
        try:
            yield
            self.commit()
        except BaseException:
            self.forget_state(table)
            if self.con is not None and self.con.in_transaction:
                self.execute("ROLLBACK")
            raise

    def is_applied(self, ref: BatchRef, table: str) -> bool:
        return bool(
            self.execute(
                "SELECT 1 FROM _dbmazz_applied WHERE pipeline = ? AND batch_id = ? AND name = ?",
                (ref.pipeline, ref.batch_id, table),
            )
        )

    def record_applied(self, ctx: ApplyContext, rows_written: int, high_water: int | None) -> None:
        self.execute(
            "INSERT INTO _dbmazz_applied VALUES (?, ?, ?, ?, ?)",
            (
                ctx.ref.pipeline,
                ctx.ref.batch_id,
                ctx.table,
                rows_written,
                None if high_water is None else _v(high_water),
            ),
        )

    def alter_columns(self, state: SqliteState, plan: ColumnPlan) -> None:
        for col in plan.added:  # widened columns: nothing to do, SQLite columns hold any value
            self.execute(f"ALTER TABLE {_q(state.table)} ADD COLUMN {_q(col.name)}")

    def truncate_rows(self, state: SqliteState, version: int) -> None:
        self.execute(f"DELETE FROM {_q(state.table)} WHERE _dbmazz_version <= ?", (_v(version),))

    def write_rows(self, state: SqliteState, step: RowsStep, rows: pa.Table, ctx: ApplyContext) -> int:
        for row in rows.to_pylist():
            self._write_row(state, step.schema, row, ctx.details)
        return rows.num_rows

    def _write_row(self, state: SqliteState, schema: TableSchema, row: dict, details: dict[str, int]) -> None:
        assert self.con is not None
        table, key, version = state.table, schema.primary_key, row["_dbmazz_version"]
        where = " AND ".join(f"{_q(k)} = ?" for k in key)
        cursor = self.con.execute(
            f"SELECT * FROM {_q(table)} WHERE {where}", [_encode(schema.column(k).type, row[k]) for k in key]
        )
        found = cursor.fetchone()
        old = dict(zip([d[0] for d in cursor.description], found, strict=True)) if found else None
        if version < state.truncated_version or (old is not None and int(old["_dbmazz_version"]) >= version):
            details["stale"] += 1  # older than the last truncate, or than the key's row (live or tombstone)
            return
        deleted = row["_dbmazz_op"] == OP_DELETE
        values = {
            c.name: (None if deleted and c.name not in key else _encode(c.type, row[c.name]))
            for c in schema.columns
        }
        for name in row["_dbmazz_unknown_columns"] or []:  # unchanged (TOASTed) value: keep the sink's
            live = old is not None and not old["_dbmazz_deleted"]
            values[name] = old[name] if live else None  # type: ignore[index]
            details["unknown_values_missing"] += not live
        if deleted:  # a tombstone: every other column NULL, even those the batch's schema no longer has
            values.update({c.name: None for c in state.schema.columns if c.name not in key})
        values.update(_dbmazz_version=_v(version), _dbmazz_deleted=int(deleted))
        sets = ", ".join(f"{_q(n)} = excluded.{_q(n)}" for n in values if n not in key)
        self.execute(
            f"INSERT INTO {_q(table)} ({', '.join(_q(n) for n in values)}) VALUES ({', '.join('?' for _ in values)}) "
            f"ON CONFLICT ({', '.join(_q(k) for k in key)}) DO UPDATE SET {sets}",
            list(values.values()),
        )
        details["deleted" if deleted else "upserted"] += 1

    # -- reads --------------------------------------------------------------------------------------------------
    def high_water_version(self, table: str) -> int | None:
        found = self.execute("SELECT max(high_water) FROM _dbmazz_applied WHERE name = ?", (table,))
        return int(found[0][0]) if found and found[0][0] is not None else None

    def row_count(self, table: str) -> int:
        if self.table_state(table) is None:
            return 0
        return int(self.execute(f"SELECT count(*) FROM {_q(table)} WHERE _dbmazz_deleted = 0")[0][0])

    def read(self, table: str, names: Sequence[str]) -> list[tuple]:
        """Live rows of ``table`` as Python values of its logical types (what a reader of this sink sees)."""
        state = self.load_state(table)
        if state is None:
            return []
        types = [state.schema.column(n).type for n in names]
        key = ", ".join(_q(k) for k in state.schema.primary_key)
        rows = self.execute(
            f"SELECT {', '.join(_q(n) for n in names)} FROM {_q(table)} WHERE _dbmazz_deleted = 0 ORDER BY {key}"
        )
        return [tuple(_decode(t, v) for t, v in zip(types, row, strict=True)) for row in rows]
