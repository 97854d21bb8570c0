"""The PostgreSQL sink: CSV COPY of Arrow rows into a temp table, then a version-ordered merge in one transaction."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv

from ...core.errors import (
    ConfigError,
    DbmazzError,
    Problem,
    SinkError,
    TransientError,
    UnrepresentableValueError,
    redact,
)
from ...core.protocols import LoadingModel, SinkCapabilities
from ...core.schema import COMMIT_TS_COLUMN, OP_COLUMN, VERSION_COLUMN, TableSchema
from .._sql_sink import META_SCHEMA, UNKNOWN_KEY, SqlSink, TableState
from .config import PostgresSinkConfig
from .types import PostgresTypes, StagedColumn

__all__ = ["PostgresSink", "copy_csv"]

_WORK = "__dbmazz_work"
VACUUM_FULL_AFTER = 10_000  # tombstones forgotten in one prune that make it rewrite the tombstone table
log = logging.getLogger(__name__)
_CONTEXT_COLUMN = re.compile(r"column (\S+?):")


class PostgresSink(SqlSink):
    """Writes change batches into PostgreSQL tables holding only live rows (see ``_sql_sink``)."""

    name = "postgres"
    types = PostgresTypes

    def __init__(self, config: PostgresSinkConfig) -> None:
        super().__init__(config.pipeline, config.schema, config.out_of_range)
        self.config = config
        self.conn: Any = None

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> PostgresSink:
        return cls(PostgresSinkConfig.from_mapping(config))

    @property
    def where(self) -> str:
        return f"{self.config.user}@{self.config.host}:{self.config.port}/{self.config.dbname}"

    # ---- lifecycle
    def connect(self) -> None:
        import psycopg

        try:
            self.conn = psycopg.connect(**self.config.connect_kwargs(), autocommit=True)
        except psycopg.OperationalError as exc:
            raise self._connect_error(exc) from None
        self.conn.execute("SET TIME ZONE 'UTC'")
        self.conn.execute(
            "SET jit = off"
        )  # JIT compiles each merge statement anew: ~0.2 s each, never repaid
        # staged batches live in temp tables: keep a 100k-change batch in memory (the default is 8MB)
        self.conn.execute(f"SET temp_buffers = '{int(self.config.temp_buffers_mb)}MB'")
        try:
            self.ensure_meta()
        except Exception as exc:
            error = self.translate_error(exc, "_dbmazz")
            fixes = [p.fix for p in self.preflight()] if isinstance(error, ConfigError) else []
            if any(fixes):  # the statements that let it create its metadata schema, runnable as printed
                error = ConfigError(error.message, hint="; ".join(dict.fromkeys(f for f in fixes if f)))
            raise error from None

    def _connect_error(self, exc: Exception) -> DbmazzError:
        text = redact(" ".join(str(exc).split()) or type(exc).__name__).removeprefix("connection failed: ")
        if "password authentication failed" in text or "no password supplied" in text:
            return ConfigError(
                f"postgres sink: the server refused the login of {self.where}: {text}",
                hint="check the user and password (the password is not shown here)",
            )
        if "does not exist" in text:
            return ConfigError(
                f"postgres sink: {text} on {self.config.host}:{self.config.port}",
                hint=f"create it first (CREATE DATABASE {self.config.dbname})",
            )
        if "no encryption" in text or "certificate" in text or "does not support SSL" in text:
            return ConfigError(
                f"postgres sink: TLS to {self.config.host}:{self.config.port} failed: {text}",
                hint="check sslmode and sslrootcert (the CA that signed the server's certificate), "
                "and that the url's host is a name the certificate carries (verify-full)",
            )
        return TransientError(
            f"postgres sink: cannot reach {self.config.host}:{self.config.port}: {text}",
            hint="check host and port, and that the server is running and accepts TCP",
        )

    def disconnect(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        self._states.clear()

    def preflight(self, tables: Sequence[str] = ()) -> list[Problem]:
        """Reachability, login, and the right to create the metadata schema and the target tables.

        A target schema that exists needs CREATE on it (PostgreSQL 15 no longer grants CREATE on ``public``
        to everyone), one that does not needs CREATE on the database; so does ``_dbmazz`` where missing.
        """
        try:
            if self.conn is None:
                self.connect()
        except DbmazzError as exc:
            return [Problem("postgres.connect", exc.message, exc.hint)]
        schemas = {META_SCHEMA} | (
            {self.schema_override} if self.schema_override else {t.partition(".")[0] for t in tables}
        )
        problems = []
        user = self.q(self.config.user)
        if not tables and not self.schema_override:
            schemas.add(
                ""
            )  # target schemas unknown: they may have to be created, which needs CREATE on the database
        for schema in sorted(schemas):
            exists, may_create = (
                (False, False)
                if not schema
                else self.fetchall(
                    "SELECT count(*) > 0, coalesce(bool_and(has_schema_privilege(oid, 'CREATE') AND "
                    "has_schema_privilege(oid, 'USAGE')), false) FROM pg_namespace WHERE nspname = %s",
                    (schema,),
                )[0]
            )
            if exists and not may_create:
                problems.append(
                    Problem(
                        "postgres.privileges",
                        f"{self.config.user} may not create tables in schema {schema}",
                        f"GRANT USAGE, CREATE ON SCHEMA {self.q(schema)} TO {user}",
                    )
                )
            elif (
                not exists
                and not self.fetchall("SELECT has_database_privilege(current_database(), 'CREATE')")[0][0]
            ):
                what = f"schema {schema}" if schema else "schemas"
                problems.append(
                    Problem(
                        "postgres.privileges",
                        f"{self.config.user} may not create {what} in database {self.config.dbname}",
                        f"GRANT CREATE ON DATABASE {self.q(self.config.dbname)} TO {user}",
                    )
                )
        return problems

    def capabilities(self) -> SinkCapabilities:
        return SinkCapabilities(LoadingModel.TRANSACTIONAL, True, True, True, True)

    # ---- dialect hooks
    def q(self, *parts: str) -> str:
        from psycopg import sql

        return sql.Identifier(*parts).as_string(self._require())

    def _require(self) -> Any:
        if self.conn is None:
            raise SinkError("postgres sink: not connected", hint="call connect() first")
        return self.conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        cur = self._require().execute(sql.encode(), list(params) or None)
        return max(cur.rowcount, 0)

    def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        return self._require().execute(sql.encode(), list(params) or None).fetchall()

    def begin(self) -> None:
        self.execute("BEGIN")

    def commit(self) -> None:
        self.execute("COMMIT")

    def rollback(self) -> None:
        if self.conn is not None and not self.conn.closed:
            try:
                self.conn.execute("ROLLBACK")
            except Exception:  # noqa: BLE001 - the connection is gone; nothing to roll back
                pass

    def ensure_schema(self, name: str) -> None:
        # CREATE SCHEMA IF NOT EXISTS needs CREATE on the database even when the schema exists
        if not self.fetchall("SELECT 1 FROM pg_namespace WHERE nspname = %s", (name,)):
            self.execute(f"CREATE SCHEMA IF NOT EXISTS {self.q(name)}")

    def lock_table_state(self, table: str) -> None:
        # the metadata row is keyed by the target (``schema`` override applied), as load_state reads it
        self.fetchall(
            f"SELECT 1 FROM {self.q(META_SCHEMA, 'tables')} WHERE table_name = %s FOR UPDATE",
            (self.target_key(table),),
        )

    def prune_table(self, state: TableState, below_version: int) -> int:
        """Forget the table's tombstones below ``below_version``; after a large prune, give the files back.

        A plain (auto)VACUUM makes the space of deleted tombstones reusable but rarely shrinks the files: the
        tombstones still inside the horizon are the newest rows, at the end of the heap, and the key index
        never shrinks. After forgetting at least ``VACUUM_FULL_AFTER`` tombstones, and more than remain, the
        tombstone table (internal: only the apply reads it) is rewritten with ``VACUUM FULL``: the sink role
        owns it, the rewrite copies only the tombstones left, and a writer that holds the table makes the
        rewrite give up after ``lock_timeout`` (5 s): the space stays reusable and the next large prune tries again.
        """
        forgotten = super().prune_table(state, below_version)
        if forgotten < VACUUM_FULL_AFTER:
            return forgotten
        tomb = self.tomb(state)
        remaining = int(self.fetchall(f"SELECT count(*) FROM {tomb}")[0][0])
        if remaining >= forgotten:
            return forgotten
        try:
            self.execute("SET lock_timeout = '5s'")
            self.execute(f"VACUUM FULL {tomb}")
        except Exception as exc:  # noqa: BLE001 - giving the space back is best effort; nothing is lost without it
            log.warning(
                "postgres sink: VACUUM FULL of the tombstones of %s skipped: %s",
                state.table,
                redact(" ".join(str(exc).split())),
            )
        finally:
            self.execute("RESET lock_timeout")
        return forgotten

    def alter_type_sql(self, target: str, column: str, native: str) -> str:
        col = self.q(column)
        return f"ALTER TABLE {target} ALTER COLUMN {col} TYPE {native} USING {col}::{native}"

    # ---- staging
    def direct_insert(self, state: TableState, schema: TableSchema, rows: pa.Table) -> bool:
        """COPY append-only rows into the table itself, inside a savepoint: a key that already exists
        (a unique violation) rolls the COPY back and the staged merge runs instead."""
        import psycopg

        staged = self._staged_columns(rows, schema, state.table)
        staged.pop(OP_COLUMN), staged.pop(UNKNOWN_KEY)
        columns = ", ".join(self.q(n) for n in staged)
        self.execute("SAVEPOINT dbmazz_direct")
        try:
            copy_csv(
                self._require(),
                f"COPY {self.target(state)} ({columns}) FROM STDIN (FORMAT csv)",
                pa.table({n: s.array for n, s in staged.items()}),
            )
        except psycopg.errors.UniqueViolation:
            self.execute("ROLLBACK TO SAVEPOINT dbmazz_direct")
            return False
        self.execute("RELEASE SAVEPOINT dbmazz_direct")
        return True

    def _staged_columns(self, rows: pa.Table, schema: TableSchema, table: str) -> dict[str, StagedColumn]:
        staged: dict[str, StagedColumn] = {
            c.name: PostgresTypes.stage(rows.column(c.name), c.type, table, c.name) for c in schema.columns
        }
        staged[OP_COLUMN] = StagedColumn(rows.column(OP_COLUMN), "smallint")
        staged[VERSION_COLUMN] = StagedColumn(rows.column(VERSION_COLUMN), PostgresTypes.VERSION)
        staged[COMMIT_TS_COLUMN] = PostgresTypes.stage(
            rows.column(COMMIT_TS_COLUMN), _TIMESTAMPTZ, table, COMMIT_TS_COLUMN
        )
        staged[UNKNOWN_KEY] = StagedColumn(rows.column(UNKNOWN_KEY), "text")
        return staged

    def stage(self, rows: pa.Table, schema: TableSchema, table: str) -> str:
        """COPY the rows as CSV into a temp table of native columns (every value has a CSV text COPY reads)."""
        staged = self._staged_columns(rows, schema, table)
        cols = ", ".join(f"{self.q(n)} {s.staging_type}" for n, s in staged.items())
        self.execute(f"CREATE TEMP TABLE {_WORK} ({cols}) ON COMMIT DROP")
        self._copy(_WORK, pa.table({n: s.array for n, s in staged.items()}), table)
        return _WORK

    def _copy(self, target: str, data: pa.Table, table: str) -> None:
        copy_csv(self._require(), f"COPY {target} FROM STDIN (FORMAT csv)", data)

    def translate_error(self, exc: Exception, table: str) -> DbmazzError:
        import psycopg
        from psycopg import errors

        text = redact(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
        if isinstance(exc, errors.InsufficientPrivilege):
            return ConfigError(
                f"postgres sink: {self.config.user} lacks a privilege writing {table}: {text}",
                hint=f"GRANT CREATE ON DATABASE {self.config.dbname} TO {self.config.user}; "
                "and CREATE on the target schema (or create the schemas and tables as their owner)",
            )
        if isinstance(exc, psycopg.DataError):
            context = getattr(exc.diag, "context", None) or ""
            match = _CONTEXT_COLUMN.search(context)
            return UnrepresentableValueError(table, match.group(1) if match else "?", text)
        if isinstance(exc, psycopg.OperationalError | errors.AdminShutdown):
            return TransientError(
                f"postgres sink: connection to {self.config.host}:{self.config.port} lost "
                f"writing {table}: {text}"
            )
        return SinkError(f"postgres sink: writing {table} failed: {text}")


_TIMESTAMPTZ = PostgresTypes.LOGICAL["timestamptz"]


def copy_csv(conn: Any, statement: str, data: pa.Table, chunk_rows: int = 20_000) -> None:
    """COPY an Arrow table as CSV; a writer thread sends one chunk while the next is encoded."""
    from psycopg.copy import QueuedLibpqWriter

    options = pacsv.WriteOptions(include_header=False, batch_size=chunk_rows)
    with conn.cursor() as cur:
        with cur.copy(statement.encode(), writer=QueuedLibpqWriter(cur)) as copy:
            for start in range(0, data.num_rows, chunk_rows):
                buffer = io.BytesIO()
                pacsv.write_csv(data.slice(start, chunk_rows), buffer, options)
                copy.write(buffer.getvalue())
