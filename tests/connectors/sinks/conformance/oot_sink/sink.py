"""SqliteSink: the smallest honest sink, kept outside dbmazz_connectors to prove a third party can add one.

It implements the raw ``Sink`` protocol: only the public contract (``dbmazz_connectors.core``) plus the batch
planner of the sink toolkit (``dbmazz_connectors.sinks.toolkit``); toolkit_sink.py is the same sink on the toolkit's
``SinkBase``, which runs the apply itself. One SQLite transaction per batch gives exactly once: the
applied-batch marker commits with the rows. Order independence comes from the versions: each row keeps its
``_dbmazz_version`` and a change only wins over a lower one; deletes leave a tombstone (a key row with
``_dbmazz_deleted = 1``) so an older insert replayed later stays out; a truncate's version is kept so rows
older than it are stale. Values are stored in a form SQLite keeps exactly (see ``_encode``); versions as
20-digit text so the whole uint64 range compares right. Not for production: one writer, row at a time.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from dbmazz_connectors.core import (
    OP_DELETE,
    BatchRef,
    ChangeBatch,
    ConfigError,
    LoadingModel,
    Problem,
    SinkCapabilities,
    TableSchema,
    WriteResult,
)
from dbmazz_connectors.core.types import Kind, LogicalType
from dbmazz_connectors.sinks.toolkit import RowsStep, SchemaStep, TruncateStep, plan_batch, reconcile_columns

__all__ = ["SqliteSink"]

_META = ("_dbmazz_version", "_dbmazz_deleted")
_TEXT_KINDS = {Kind.UINT64: int, Kind.FLOAT32: float, Kind.FLOAT64: float, Kind.DECIMAL: Decimal}
_ISO_KINDS = {
    Kind.DATE: dt.date,
    Kind.TIME: dt.time,
    Kind.TIMESTAMP: dt.datetime,
    Kind.TIMESTAMPTZ: dt.datetime,
}


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _v(version: int) -> str:
    return f"{version:020d}"


def _encode(t: LogicalType, value: Any) -> Any:
    """A value SQLite stores without loss: big or inexact numbers and temporals as text, nested values as JSON."""
    kind = t.kind
    if value is None or kind in (Kind.BOOL, Kind.INT8, Kind.INT16, Kind.INT32, Kind.INT64, Kind.BINARY):
        return value
    if kind in _TEXT_KINDS:
        return repr(value) if isinstance(value, float) else str(value)
    if kind in _ISO_KINDS:
        return value.isoformat()
    if kind in (Kind.ARRAY, Kind.INTERVAL):
        return json.dumps(value, default=str)
    return value  # strings, json, uuid, enum


def _decode(t: LogicalType, value: Any) -> Any:
    kind = t.kind
    if value is None or (
        kind is Kind.DECIMAL and t.precision is None
    ):  # unbounded: text (NaN, Infinity) anyway
        return value
    if kind is Kind.BOOL:
        return bool(value)
    if kind in _TEXT_KINDS:
        return _TEXT_KINDS[kind](value)
    if kind in _ISO_KINDS:
        return _ISO_KINDS[kind].fromisoformat(value)
    if kind in (Kind.ARRAY, Kind.INTERVAL):
        return json.loads(value)
    return value


class SqliteSink:
    name = "sqlite"

    def __init__(self, path: str, pipeline: str) -> None:
        self.path, self.pipeline = path, pipeline
        self.con: sqlite3.Connection | None = None

    @classmethod
    def from_config(cls, mapping: Mapping[str, Any]) -> SqliteSink:
        unknown = sorted(set(mapping) - {"url", "pipeline"})
        if unknown:
            raise ConfigError(
                f"sqlite sink: unknown option {', '.join(unknown)}", hint="options: url, pipeline"
            )
        url = str(mapping.get("url", ""))
        if not url.startswith("sqlite:///"):
            raise ConfigError(f"sqlite sink: expected a url like sqlite:///path/file.db, got {url!r}")
        return cls(url.removeprefix("sqlite:///"), str(mapping.get("pipeline", "default")))

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
            "CREATE TABLE IF NOT EXISTS _dbmazz_tables (name TEXT PRIMARY KEY, schema_json TEXT, "
            "truncated TEXT, high_water TEXT)"
        )
        self.execute(
            "CREATE TABLE IF NOT EXISTS _dbmazz_applied (pipeline TEXT, batch_id TEXT, name TEXT, "
            "PRIMARY KEY (pipeline, batch_id, name))"
        )

    def disconnect(self) -> None:
        if self.con is not None:
            self.con.close()
            self.con = None

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        assert self.con is not None, "connect() first"
        return self.con.execute(sql, params).fetchall()

    def commit(self) -> None:
        assert self.con is not None
        self.con.execute("COMMIT")

    def capabilities(self) -> SinkCapabilities:
        return SinkCapabilities(
            LoadingModel.TRANSACTIONAL,
            supports_upsert=True,
            supports_delete=True,
            supports_schema_evolution=True,
            supports_transactions=True,
        )

    # -- metadata -----------------------------------------------------------------------------------------------
    def _meta(self, table: str) -> tuple[TableSchema, int, int | None] | None:
        found = self.execute(
            "SELECT schema_json, truncated, high_water FROM _dbmazz_tables WHERE name = ?", (table,)
        )
        if not found:
            return None
        schema_json, truncated, high_water = found[0]
        return (
            TableSchema.from_dict(json.loads(schema_json)),
            int(truncated),
            int(high_water) if high_water else None,
        )

    def create_table(self, schema: TableSchema) -> None:
        if self._meta(schema.qualified_name) is None:
            self.execute("BEGIN IMMEDIATE")
            self._create(schema)
            self.commit()

    def _create(self, schema: TableSchema) -> tuple[TableSchema, int, int | None]:
        cols = ", ".join(_q(n) for n in (*schema.column_names, *_META))
        key = ", ".join(_q(k) for k in schema.primary_key)
        self.execute(f"CREATE TABLE IF NOT EXISTS {_q(schema.qualified_name)} ({cols}, PRIMARY KEY ({key}))")
        self.execute(
            "INSERT OR IGNORE INTO _dbmazz_tables VALUES (?, ?, ?, NULL)",
            (schema.qualified_name, json.dumps(schema.to_dict()), _v(0)),
        )
        return schema, 0, None

    def is_applied(self, ref: BatchRef, table: str) -> bool:
        return bool(
            self.execute(
                "SELECT 1 FROM _dbmazz_applied WHERE pipeline = ? AND batch_id = ? AND name = ?",
                (ref.pipeline, ref.batch_id, table),
            )
        )

    def high_water_version(self, table: str) -> int | None:
        meta = self._meta(table)
        return meta[2] if meta else None

    def row_count(self, table: str) -> int:
        if self._meta(table) is None:
            return 0
        return int(self.execute(f"SELECT count(*) FROM {_q(table)} WHERE _dbmazz_deleted = 0")[0][0])

    def read(self, table: str, names: Sequence[str]) -> list[tuple]:
        """Live rows of ``table`` as Python values of its logical types (what a reader of this sink sees)."""
        meta = self._meta(table)
        if meta is None:
            return []
        types = [meta[0].column(n).type for n in names]
        key = ", ".join(_q(k) for k in meta[0].primary_key)
        rows = self.execute(
            f"SELECT {', '.join(_q(n) for n in names)} FROM {_q(table)} "
            f"WHERE _dbmazz_deleted = 0 ORDER BY {key}"
        )
        return [tuple(_decode(t, v) for t, v in zip(types, row, strict=True)) for row in rows]

    # -- applying -----------------------------------------------------------------------------------------------
    def write_batch(self, batch: ChangeBatch, ref: BatchRef) -> WriteResult:
        table = batch.table
        self.execute("BEGIN IMMEDIATE")  # the write lock first: the applied check and the rows see one state
        try:
            if self.is_applied(ref, table):
                self.execute("ROLLBACK")
                return WriteResult(table, 0, True, self.high_water_version(table))
            result = self._write(batch, ref)
            self.commit()
            return result
        except BaseException:
            if self.con is not None and self.con.in_transaction:
                self.execute("ROLLBACK")
            raise

    def _write(self, batch: ChangeBatch, ref: BatchRef) -> WriteResult:
        table = batch.table
        schema, truncated, high_water = self._meta(table) or self._create(batch.schema)
        steps = plan_batch(batch)
        details = dict.fromkeys(
            (
                "upserted",
                "deleted",
                "stale",
                "unknown_values_missing",
                "truncates",
                "columns_added",
                "columns_widened",
            ),
            0,
        )
        plans, current = [], schema  # every schema change checked before anything is written
        for step in steps:
            if isinstance(step, SchemaStep | RowsStep):
                plan = reconcile_columns(
                    current, step.new if isinstance(step, SchemaStep) else step.schema, sink="sqlite sink"
                )
                plans.append(plan)
                current = plan.schema
        for plan in plans:
            for col in plan.added:
                self.execute(f"ALTER TABLE {_q(table)} ADD COLUMN {_q(col.name)}")
            details["columns_added"] += len(plan.added)
            details["columns_widened"] += len(plan.widened)  # SQLite columns hold any value: nothing to alter
        versions = [high_water or 0]
        for step in steps:
            if isinstance(step, TruncateStep):
                self.execute(f"DELETE FROM {_q(table)} WHERE _dbmazz_version <= ?", (_v(step.version),))
                truncated = max(truncated, step.version)
                versions.append(step.version)
                details["truncates"] += 1
            elif isinstance(step, RowsStep):
                for row in step.rows.to_pylist():
                    versions.append(row["_dbmazz_version"])
                    self._write_row(table, current, step.schema, row, truncated, details)
        self.execute(
            "UPDATE _dbmazz_tables SET schema_json = ?, truncated = ?, high_water = ? WHERE name = ?",
            (json.dumps(current.to_dict()), _v(truncated), _v(max(versions)), table),
        )
        self.execute("INSERT INTO _dbmazz_applied VALUES (?, ?, ?)", (ref.pipeline, ref.batch_id, table))
        written = details["upserted"] + details["deleted"]
        return WriteResult(table, written, False, max(versions) or None, details)

    def _stored(self, table: str, where: str, key_values: list) -> dict[str, Any] | None:
        assert self.con is not None
        cursor = self.con.execute(f"SELECT * FROM {_q(table)} WHERE {where}", key_values)
        found = cursor.fetchone()
        return dict(zip([d[0] for d in cursor.description], found, strict=True)) if found else None

    def _write_row(
        self,
        table: str,
        sink_schema: TableSchema,
        schema: TableSchema,
        row: dict,
        truncated: int,
        details: dict[str, int],
    ) -> None:
        version = row["_dbmazz_version"]
        key = schema.primary_key
        where = " AND ".join(f"{_q(k)} = ?" for k in key)
        key_values = [_encode(schema.column(k).type, row[k]) for k in key]
        old = self._stored(table, where, key_values)
        if version < truncated or (old is not None and int(old["_dbmazz_version"]) >= version):
            details["stale"] += 1
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
            values.update({c.name: None for c in sink_schema.columns if c.name not in key})
        values.update(_dbmazz_version=_v(version), _dbmazz_deleted=int(deleted))
        cols = ", ".join(_q(n) for n in values)
        marks = ", ".join("?" for _ in values)
        sets = ", ".join(f"{_q(n)} = excluded.{_q(n)}" for n in values if n not in key)
        self.execute(
            f"INSERT INTO {_q(table)} ({cols}) VALUES ({marks}) "
            f"ON CONFLICT ({', '.join(_q(k) for k in key)}) DO UPDATE SET {sets}",
            list(values.values()),
        )
        details["deleted" if deleted else "upserted"] += 1
