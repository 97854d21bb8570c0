"""The DuckDB sink: a local database file, nothing to start; exactly-once by transaction."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shlex
import time
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

from ...core.errors import (
    ConfigError,
    DbmazzError,
    Problem,
    SinkError,
    TransientError,
    UnrepresentableValueError,
)
from ...core.protocols import LoadingModel, SinkCapabilities
from ...core.schema import COMMIT_TS_COLUMN, OP_COLUMN, VERSION_COLUMN, TableSchema
from .._plan import ColumnPlan
from .._sql_sink import META_SCHEMA, UNKNOWN_KEY, SqlSink, TableState
from .config import DuckDbConfig
from .types import DuckDbTypes

__all__ = ["DuckDbSink"]

_STAGE = "__dbmazz_stage"
_CATALOG = "dbmazz_sink"
_WORK = "__dbmazz_work"


def _quote(part: str) -> str:
    # DuckDB's Python API has no identifier-quoting helper; this is SQL's own rule, as DuckDB applies it.
    return '"' + part.replace('"', '""') + '"'


class DuckDbSink(SqlSink):
    """Writes change batches into a DuckDB file.

    The table ``<schema>.<table>`` holds only live rows; see ``dbmazz_connectors.sinks._sql_sink``
    for the hidden ``_dbmazz`` tables (tombstones, applied batches). One process writes a DuckDB
    file at a time (DuckDB's own rule); readers can open it read-only between applies.
    """

    name = "duckdb"
    types = DuckDbTypes
    upsert_by_replace = True

    def __init__(self, config: DuckDbConfig) -> None:
        super().__init__(config.pipeline, config.schema, config.out_of_range)
        self.config = config
        self.con: Any = None

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> DuckDbSink:
        return cls(DuckDbConfig.from_mapping(config))

    # ---- lifecycle
    def connect(self) -> None:
        import duckdb

        path = self.config.path
        if path != ":memory:":
            folder = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(folder):
                raise ConfigError(f"duckdb sink: expected the folder {folder} to exist, it does not",
                                  hint=f"mkdir -p {shlex.quote(folder)}")
        self.con = self._open_waiting(duckdb, path)
        if self.config.threads:
            self.con.execute(f"SET threads = {int(self.config.threads)}")
        if self.config.memory_limit:
            self.con.execute("SET memory_limit = ?", [self.config.memory_limit])
        if self.config.checkpoint_threshold:
            self.con.execute("SET checkpoint_threshold = ?", [self.config.checkpoint_threshold])
        self.ensure_meta()

    def _open_waiting(self, duckdb: Any, path: str) -> Any:
        """Open the file, waiting up to ``lock_wait_seconds`` while another process holds its lock.

        DuckDB allows one process at a time on a file, so a reader opening it between applies is
        expected: waiting briefly beats failing the batch. Still locked afterwards: a TransientError
        (the orchestrator may retry); any other failure: a ConfigError.
        """
        deadline = time.monotonic() + self.config.lock_wait_seconds
        while True:
            try:
                return self._open(duckdb, path)
            except duckdb.Error as exc:
                locked = "lock" in str(exc).lower()
                if locked and time.monotonic() < deadline:
                    time.sleep(0.2)
                    continue
                if locked:
                    raise TransientError(
                        f"duckdb sink: {path} stayed locked by another process for {self.config.lock_wait_seconds:g}s",
                        hint="close other connections to the file (readers can open it read-only between applies)",
                    ) from None
                raise ConfigError(f"duckdb sink: cannot open {path}: {exc}",
                                  hint="check the file permissions and that no other process writes the file") from None

    def _open(self, duckdb: Any, path: str) -> Any:
        """Open the file; with a row group size set, through ATTACH (the only place DuckDB takes it)."""
        if path == ":memory:" or not self.config.row_group_size:
            return duckdb.connect(path)
        con = duckdb.connect()
        literal = "'" + path.replace("'", "''") + "'"
        try:
            con.execute(f"ATTACH {literal} AS {_quote(_CATALOG)} (ROW_GROUP_SIZE {int(self.config.row_group_size)})")
            con.execute(f"USE {_quote(_CATALOG)}")
        except Exception:
            con.close()
            raise
        return con

    def disconnect(self) -> None:
        if self.con is not None:
            self.con.close()
            self.con = None
        self._states.clear()

    def preflight(self, tables: Sequence[str] = ()) -> list[Problem]:
        """Open the file and write to it (a file has no per-schema rights: ``tables`` changes nothing)."""
        try:
            if self.con is None:
                self.connect()
            self.execute(f"CREATE TEMP TABLE {_quote('__dbmazz_preflight')} (x INTEGER)")
            self.execute(f"DROP TABLE {_quote('__dbmazz_preflight')}")
        except DbmazzError as exc:
            return [Problem("duckdb.open", exc.message, exc.hint)]
        except Exception as exc:  # noqa: BLE001 - reported as a problem, not raised
            return [Problem("duckdb.write", f"cannot write to {self.config.path}: {exc}")]
        return []

    def capabilities(self) -> SinkCapabilities:
        return SinkCapabilities(LoadingModel.TRANSACTIONAL, True, True, True, True)

    # ---- dialect hooks
    def q(self, *parts: str) -> str:
        return ".".join(_quote(p) for p in parts)

    def _require(self) -> Any:
        if self.con is None:
            raise SinkError("duckdb sink: not connected", hint="call connect() first")
        return self.con

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        cur = self._require().execute(sql.replace("%s", "?"), list(params))
        if sql.lstrip().upper().startswith(("INSERT", "DELETE", "UPDATE")):
            row = cur.fetchone()
            return int(row[0]) if row else 0
        return 0

    def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        return self._require().execute(sql.replace("%s", "?"), list(params)).fetchall()

    def begin(self) -> None:
        self._require().begin()

    def commit(self) -> None:
        self._require().commit()

    def rollback(self) -> None:
        if self.con is not None:
            try:
                self.con.rollback()
            except Exception:  # noqa: BLE001 - no transaction open
                pass

    def _create_objects(self, state: TableState) -> None:
        """As every SQL sink, except that DuckDB identifiers ignore case: a source table whose schema and name
        equal another's but for case (``public.Orders``, ``public.orders``) gets a table of its own,
        ``<name>_<8 hex digits of its source name's sha1>``; the first one created keeps the plain name."""
        taken = self.fetchall(
            f"SELECT table_name FROM {self.q(META_SCHEMA, 'tables')} WHERE lower(target_schema) = lower(%s) "
            "AND lower(target_name) = lower(%s) AND table_name <> %s",
            (state.target_schema, state.target_name, self.target_key(state.table)))
        if taken:
            digest = hashlib.sha1(state.table.encode()).hexdigest()[:8]
            state = dataclasses.replace(state, target_name=f"{state.target_name}_{digest}")
        super()._create_objects(state)

    def _alter(self, state: TableState, plan: ColumnPlan, details: dict[str, int]) -> TableState:
        """As every SQL sink, except a widened primary-key column: DuckDB cannot ``ALTER`` the type of a
        column an index covers, so the table (and its tombstones) is copied into a new one under the same name."""
        keyed = [(old, new) for old, new in plan.widened if new.name in state.schema.primary_key]
        if not keyed:
            return super()._alter(state, plan, details)
        others = ColumnPlan(plan.schema, plan.added, tuple(w for w in plan.widened if w not in keyed))
        state = super()._alter(state, others, details)
        columns = [*plan.schema.columns]
        self._rebuild(state.target_schema, state.target_name, state.schema,
                      [(c.name, self.types.native(c.type), c.name in state.schema.primary_key) for c in columns]
                      + [(VERSION_COLUMN, self.types.VERSION, True), (COMMIT_TS_COLUMN, "TIMESTAMPTZ", True)])
        self._rebuild(META_SCHEMA, state.tombstones, state.schema,
                      [(k, self.types.native(state.schema.column(k).type), True) for k in state.schema.primary_key]
                      + [(VERSION_COLUMN, self.types.VERSION, True)])
        details["columns_widened"] += len(keyed)
        return state

    def _rebuild(self, schema_name: str, name: str, schema: TableSchema, columns: list[tuple[str, str, bool]]) -> None:
        """Copy the table ``schema_name.name`` into a new one with ``columns`` (name, native type, not null)."""
        work = name + "__dbmazz_rebuild"
        defs = ", ".join(f"{_quote(c)} {native}{' NOT NULL' if not_null else ''}" for c, native, not_null in columns)
        names = ", ".join(_quote(c) for c, _, _ in columns)
        self.execute(f"CREATE TABLE {self.q(schema_name, work)} ({defs}, "
                     f"PRIMARY KEY ({', '.join(_quote(k) for k in schema.primary_key)}))")
        self.execute(f"INSERT INTO {self.q(schema_name, work)} ({names}) SELECT {names} FROM {self.q(schema_name, name)}")
        self.execute(f"DROP TABLE {self.q(schema_name, name)}")
        self.execute(f"ALTER TABLE {self.q(schema_name, work)} RENAME TO {_quote(name)}")

    def direct_insert(self, state: TableState, schema: TableSchema, rows: pa.Table) -> bool:
        """INSERT append-only rows straight from Arrow when none of their keys is in the table yet."""
        con = self._require()
        con.register(_STAGE, self._prepare(rows, schema))
        try:
            on_key = " AND ".join(f"x.{_quote(k)} = {DuckDbTypes.select_expr('w.' + _quote(k), schema.column(k).type)}"
                                  for k in schema.primary_key)
            if self.fetchall(f"SELECT 1 FROM {self.target(state)} x JOIN {_STAGE} w ON {on_key} LIMIT 1"):
                return False
            names = [*schema.column_names, VERSION_COLUMN, COMMIT_TS_COLUMN]
            exprs = [DuckDbTypes.select_expr(_quote(c.name), c.type) for c in schema.columns]
            exprs += [_quote(VERSION_COLUMN), _quote(COMMIT_TS_COLUMN)]
            try:
                con.execute(f"INSERT INTO {self.target(state)} ({', '.join(_quote(n) for n in names)}) "
                            f"SELECT {', '.join(exprs)} FROM {_STAGE}")
            except Exception as exc:
                raise self._conversion_error(schema, state.table, exc) or self.translate_error(exc, state.table) from None
            return True
        finally:
            con.unregister(_STAGE)

    @staticmethod
    def _prepare(rows: pa.Table, schema: TableSchema) -> pa.Table:
        return pa.table({name: DuckDbTypes.prepare(rows.column(name), schema.column(name).type)
                         if name in schema.column_index else rows.column(name) for name in rows.column_names})

    def stage(self, rows: pa.Table, schema: TableSchema, table: str) -> str:
        """Register the Arrow rows and copy them, converted to native values, into a temp table."""
        con = self._require()
        exprs = [f"{DuckDbTypes.select_expr(_quote(c.name), c.type)} AS {_quote(c.name)}" for c in schema.columns]
        exprs += [_quote(n) for n in (OP_COLUMN, VERSION_COLUMN, COMMIT_TS_COLUMN, UNKNOWN_KEY)]
        con.register(_STAGE, self._prepare(rows, schema))
        try:
            con.execute(f"CREATE OR REPLACE TEMP TABLE {_WORK} AS SELECT {', '.join(exprs)} FROM {_STAGE}")
        except Exception as exc:
            raise self._conversion_error(schema, table, exc) or self.translate_error(exc, table) from None
        finally:
            con.unregister(_STAGE)
        return _WORK

    def _conversion_error(self, schema: TableSchema, table: str, exc: Exception) -> DbmazzError | None:
        """Name the column whose values DuckDB refused (checked one converted column at a time)."""
        self.rollback()  # the failed statement aborted the transaction; nothing of the batch is kept
        for col in schema.columns:
            expr = DuckDbTypes.select_expr(_quote(col.name), col.type)
            if expr == _quote(col.name):
                continue
            try:
                self.con.execute(f"SELECT {expr} FROM {_STAGE}").fetchall()
            except Exception as col_exc:  # noqa: BLE001
                return UnrepresentableValueError(table, col.name, f"duckdb refused it as {DuckDbTypes.native(col.type)}: "
                                                 f"{str(col_exc).splitlines()[0]}")
        return None

    def translate_error(self, exc: Exception, table: str) -> DbmazzError:
        import duckdb

        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if isinstance(exc, duckdb.ConversionException | duckdb.OutOfRangeException):
            return UnrepresentableValueError(table, "?", text)
        if isinstance(exc, duckdb.IOException):
            return TransientError(f"duckdb sink: i/o error writing {table}: {text}")
        return SinkError(f"duckdb sink: writing {table} failed: {text}")
