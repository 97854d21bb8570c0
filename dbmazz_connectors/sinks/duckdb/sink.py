"""The DuckDB sink: a local database file, nothing to start; exactly-once by transaction."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shlex
import threading
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
from ...core.schema import COMMIT_TS_COLUMN, OP_COLUMN, OP_DELETE, VERSION_COLUMN, TableSchema
from .._plan import ColumnPlan
from .._sql_sink import META_SCHEMA, UNKNOWN_KEY, SqlSink, TableState
from .config import DuckDbConfig
from .types import DuckDbTypes

__all__ = ["DuckDbSink"]

_STAGE = "__dbmazz_stage"
_CATALOG = "dbmazz_sink"
_WORK = "__dbmazz_work"
# one writer lock per (database file, table) for the connections of this process (see lock_table_state)
_LOCKS: dict[tuple[str, str], threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


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
        self._held: list[threading.Lock] = []
        self._catalog: str | None = None

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
                raise ConfigError(
                    f"duckdb sink: expected the folder {folder} to exist, it does not",
                    hint=f"mkdir -p {shlex.quote(folder)}",
                )
        self.con = self._open_waiting(duckdb, path)
        self._catalog = self.con.execute("SELECT current_database()").fetchone()[0]
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
                raise ConfigError(
                    f"duckdb sink: cannot open {path}: {exc}",
                    hint="check the file permissions and that no other process writes the file",
                ) from None

    def _open(self, duckdb: Any, path: str) -> Any:
        """Open the file; with a row group size set, through ATTACH (the only place DuckDB takes it)."""
        if path == ":memory:" or not self.config.row_group_size:
            return duckdb.connect(path)
        con = duckdb.connect()
        literal = "'" + path.replace("'", "''") + "'"
        try:
            con.execute(
                f"ATTACH {literal} AS {_quote(_CATALOG)} (ROW_GROUP_SIZE {int(self.config.row_group_size)})"
            )
            con.execute(f"USE {_quote(_CATALOG)}")
        except Exception:
            con.close()
            raise
        return con

    def disconnect(self) -> None:
        if self.con is not None:
            self.con.close()  # an open transaction is rolled back
            self.con = None
        self._release()
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
        """A quoted name; a schema-qualified one also names the catalog: a file ``public.duckdb`` is the catalog
        ``public``, in which ``public.orders`` is ambiguous (catalog or schema)."""
        if len(parts) == 2 and self._catalog is not None:
            parts = (self._catalog, *parts)
        return ".".join(_quote(p) for p in parts)

    def target_key_clause(self, key_columns: str) -> str:
        """No PRIMARY KEY unless configured: DuckDB's key index (an ART) made each 100k-change batch of updates and
        deletes 2.5x dearer (re-inserting a key deleted in the same transaction is its slow path), while the apply
        keeps one row per key by itself (each key's one change deletes the key, then inserts it)."""
        return super().target_key_clause(key_columns) if self.config.primary_key else ""

    def lock_table_state(self, table: str) -> None:
        """Hold the table's writer lock until commit or rollback: without a key index nothing else would stop two
        connections of this process (the only other writers DuckDB lets in) from both inserting a new key."""
        path = self.config.path
        if path == ":memory:":
            return  # every connection to :memory: is a database of its own
        with _LOCKS_GUARD:
            lock = _LOCKS.setdefault((os.path.realpath(path), self.target_key(table)), threading.Lock())
        if not lock.acquire(timeout=self.config.lock_wait_seconds):
            raise TransientError(
                f"duckdb sink: another connection of this process kept writing {table} for "
                f"{self.config.lock_wait_seconds:g}s",
                hint="apply one batch of a table at a time; retrying this one is safe",
            )
        self._held.append(lock)

    def _release(self) -> None:
        while self._held:
            self._held.pop().release()

    def _upsert(
        self, state: TableState, staged: str, names: list[str], where: str, params: Sequence = ()
    ) -> int:
        """UPDATE the keys the table holds, then INSERT the others: ``ON CONFLICT`` needs the key index,
        which a table has only with ``primary_key: true`` (works either way)."""
        key = state.schema.primary_key
        cols = [*names, VERSION_COLUMN, COMMIT_TS_COLUMN]
        on_key = " AND ".join(f"x.{_quote(k)} = w.{_quote(k)}" for k in key)
        rows = f"w.{_quote(OP_COLUMN)} <> {OP_DELETE} AND w.{where}"
        sets = ", ".join(f"{_quote(c)} = w.{_quote(c)}" for c in cols if c not in key)
        updated = self.execute(
            f"UPDATE {self.target(state)} x SET {sets} FROM {staged} w WHERE {on_key} AND {rows}", params
        )
        collist = ", ".join(_quote(c) for c in cols)
        inserted = self.execute(
            f"INSERT INTO {self.target(state)} ({collist}) SELECT {', '.join('w.' + _quote(c) for c in cols)} "
            f"FROM {staged} w WHERE {rows} AND NOT EXISTS (SELECT 1 FROM {self.target(state)} x WHERE {on_key})",
            params,
        )
        return updated + inserted

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
        try:
            self._require().commit()
        finally:
            self._release()

    def rollback(self) -> None:
        try:
            if self.con is not None:
                self.con.rollback()
        except Exception:  # noqa: BLE001 - no transaction open
            pass
        finally:
            self._release()

    def _create_objects(self, state: TableState) -> None:
        """As every SQL sink, except that DuckDB identifiers ignore case: a source table whose schema and name
        equal another's but for case (``public.Orders``, ``public.orders``) gets a table of its own,
        ``<name>_<8 hex digits of its source name's sha1>``; the first one created keeps the plain name."""
        taken = self.fetchall(
            f"SELECT table_name FROM {self.q(META_SCHEMA, 'tables')} WHERE lower(target_schema) = lower(%s) "
            "AND lower(target_name) = lower(%s) AND table_name <> %s",
            (state.target_schema, state.target_name, self.target_key(state.table)),
        )
        if taken:
            digest = hashlib.sha1(state.table.encode()).hexdigest()[:8]
            state = dataclasses.replace(state, target_name=f"{state.target_name}_{digest}")
        super()._create_objects(state)

    def alter_columns(self, state: TableState, plan: ColumnPlan) -> None:
        """As every SQL sink, except a widened primary-key column: DuckDB cannot ``ALTER`` the type of a
        column an index covers, so the table (and its tombstones) is copied into a new one under the same name."""
        keyed = [(old, new) for old, new in plan.widened if new.name in state.schema.primary_key]
        if not keyed:
            return super().alter_columns(state, plan)
        super().alter_columns(
            state, ColumnPlan(plan.schema, plan.added, tuple(w for w in plan.widened if w not in keyed))
        )
        schema = plan.schema
        keyed_target = bool(
            self.fetchall(  # a table created with primary_key: true keeps its key index
                "SELECT 1 FROM duckdb_constraints() WHERE database_name = current_database() AND schema_name = %s "
                "AND table_name = %s AND constraint_type = 'PRIMARY KEY'",
                (state.target_schema, state.target_name),
            )
        )
        self._rebuild(
            state.target_schema,
            state.target_name,
            schema,
            [(c.name, self.types.native(c.type), c.name in schema.primary_key) for c in schema.columns]
            + [(VERSION_COLUMN, self.types.VERSION, True), (COMMIT_TS_COLUMN, "TIMESTAMPTZ", True)],
            keyed_target,
        )
        self._rebuild(
            META_SCHEMA,
            state.tombstones,
            schema,
            [(k, self.types.native(schema.column(k).type), True) for k in schema.primary_key]
            + [(VERSION_COLUMN, self.types.VERSION, True)],
            True,
        )
        return None

    def _rebuild(
        self,
        schema_name: str,
        name: str,
        schema: TableSchema,
        columns: list[tuple[str, str, bool]],
        primary_key: bool,
    ) -> None:
        """Copy the table ``schema_name.name`` into a new one with ``columns`` (name, native type, not null)."""
        work = name + "__dbmazz_rebuild"
        defs = ", ".join(
            f"{_quote(c)} {native}{' NOT NULL' if not_null else ''}" for c, native, not_null in columns
        )
        names = ", ".join(_quote(c) for c, _, _ in columns)
        key = f", PRIMARY KEY ({', '.join(_quote(k) for k in schema.primary_key)})" if primary_key else ""
        self.execute(f"CREATE TABLE {self.q(schema_name, work)} ({defs}{key})")
        self.execute(
            f"INSERT INTO {self.q(schema_name, work)} ({names}) SELECT {names} FROM {self.q(schema_name, name)}"
        )
        self.execute(f"DROP TABLE {self.q(schema_name, name)}")
        self.execute(f"ALTER TABLE {self.q(schema_name, work)} RENAME TO {_quote(name)}")

    def direct_insert(self, state: TableState, schema: TableSchema, rows: pa.Table) -> bool:
        """INSERT append-only rows straight from Arrow when none of their keys is in the table yet."""
        con = self._require()
        con.register(_STAGE, self._prepare(rows, schema))
        try:
            on_key = " AND ".join(
                f"x.{_quote(k)} = {DuckDbTypes.select_expr('w.' + _quote(k), schema.column(k).type)}"
                for k in schema.primary_key
            )
            if self.fetchall(f"SELECT 1 FROM {self.target(state)} x JOIN {_STAGE} w ON {on_key} LIMIT 1"):
                return False
            names = [*schema.column_names, VERSION_COLUMN, COMMIT_TS_COLUMN]
            exprs = [DuckDbTypes.select_expr(_quote(c.name), c.type) for c in schema.columns]
            exprs += [_quote(VERSION_COLUMN), _quote(COMMIT_TS_COLUMN)]
            try:
                con.execute(
                    f"INSERT INTO {self.target(state)} ({', '.join(_quote(n) for n in names)}) "
                    f"SELECT {', '.join(exprs)} FROM {_STAGE}"
                )
            except Exception as exc:
                raise self._conversion_error(schema, state.table, exc) or self.translate_error(
                    exc, state.table
                ) from None
            return True
        finally:
            con.unregister(_STAGE)

    @staticmethod
    def _prepare(rows: pa.Table, schema: TableSchema) -> pa.Table:
        return pa.table(
            {
                name: DuckDbTypes.prepare(rows.column(name), schema.column(name).type)
                if name in schema.column_index
                else rows.column(name)
                for name in rows.column_names
            }
        )

    def stage(self, rows: pa.Table, schema: TableSchema, table: str) -> str:
        """Register the Arrow rows and copy them, converted to native values, into a temp table."""
        con = self._require()
        exprs = [
            f"{DuckDbTypes.select_expr(_quote(c.name), c.type)} AS {_quote(c.name)}" for c in schema.columns
        ]
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
                return UnrepresentableValueError(
                    table,
                    col.name,
                    f"duckdb refused it as {DuckDbTypes.native(col.type)}: {str(col_exc).splitlines()[0]}",
                )
        return None

    def translate_error(self, exc: Exception, table: str) -> DbmazzError:
        import duckdb

        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if isinstance(exc, duckdb.ConversionException | duckdb.OutOfRangeException):
            return UnrepresentableValueError(table, "?", text)
        if isinstance(exc, duckdb.IOException):
            return TransientError(f"duckdb sink: i/o error writing {table}: {text}")
        return SinkError(f"duckdb sink: writing {table} failed: {text}")
