"""Snapshot reads of MySQL/MariaDB tables: primary-key chunks in consistent-snapshot transactions, into Arrow.

Consistency (docs/architecture.md, "Snapshots"). Each worker connection opens one transaction
``START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY`` (REPEATABLE READ) and learns the binlog
coordinate ``P`` the snapshot corresponds to; every row it reads carries ``BinlogPosition(P).version``,
the encoding CDC uses for a transaction's commit (``_reader.py``: the end of its XID event).

* **MariaDB** (``binlog_snapshot``): ``SHOW STATUS LIKE 'binlog_snapshot_%'`` in that transaction
  gives ``P``. MariaDB commits transactions to InnoDB in binlog order (``commit_ordered``) and takes
  the snapshot under the same lock, so the snapshot shows exactly the transactions whose events
  end at or before ``P``. A transaction it shows ends at or before ``P``: its version is ``<= P``,
  and equal only for the last one, whose changes the snapshot holds as they are (equal versions,
  identical rows). A transaction it does not show is written to the binlog after ``P``: its commit
  event ends after ``P`` (in the same file, or in a later file: a higher sequence), so its version
  is ``> P``. Hence every change the snapshot misses wins over its rows, and every change it holds
  is at or below them. No lock is taken.
* **MySQL** (``lock_tables``; MySQL has no ``binlog_snapshot_*``): a second connection takes
  ``LOCK TABLES t READ`` on the chunks' tables, the worker starts its snapshot, the second
  connection reads the binlog end ``P`` and unlocks. The lock is granted only once every
  transaction that wrote to those tables has ended (it waits for their metadata locks, released
  after the commit, which writes the binlog first): their commits end at or before ``P`` and the
  snapshot shows them. No transaction can write to the tables until the unlock, after ``P`` was
  read: their commits end after ``P``. Writers of these tables wait for the few milliseconds the
  lock is held (at most ``lock_wait_seconds`` for a long transaction to end). Needs the
  ``LOCK TABLES`` privilege; ``FLUSH TABLES WITH READ LOCK`` (RELOAD) is never used.

Rows come from the text protocol, read unbuffered in blocks of ``block_rows`` rows or
``block_bytes`` bytes and decoded column by column (``_text.py``) into the values CDC gives.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pymysql

from ...core.batch import Rows
from ...core.errors import ConfigError, SourceError, TableChangedError, TransientError, redact
from ...core.schema import TableSchema
from ...core.snapshot import SnapshotChunk
from ._keys import key_predicate, qualified, quote
from ._position import binlog_end
from ._resultset import fetch_blocks
from ._schema import TableInfo
from ._text import decode_text_rows, field_mismatch, select_expression
from .config import MySqlConfig
from .position import BinlogPosition

__all__ = ["SnapshotReader", "SnapshotTable", "SESSION_SQL", "translate", "lock_tables_grant", "select_grant"]

SESSION_SQL = (
    "SET SESSION time_zone = '+00:00', sql_mode = '', net_write_timeout = 3600, net_read_timeout = 3600"
)
_START = (
    "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ",
    "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY",
)
_DONE = object()
# connection lost or killed, server shutting down, lock wait timeout, deadlock, table rebuilt under the snapshot
_TRANSIENT = frozenset({2003, 2006, 2013, 1053, 1205, 1213, 1317, 1412, 1927})
_DENIED = frozenset({1044, 1142, 1227})


@dataclass(frozen=True)
class SnapshotTable:
    """A table to read: its schema and its current layout (information_schema)."""

    schema: TableSchema
    info: TableInfo

    def check_fields(self, fields: list) -> None:
        """Refuse a result whose columns are not the layouts read before (the table was altered meanwhile)."""
        problem = field_mismatch(self.info.columns, fields)
        if problem:
            raise TransientError(
                f"the snapshot of {self.schema.qualified_name} found the table altered since its "
                f"layout was read ({problem}); retry the batch"
            )

    def statement(self, chunk: SnapshotChunk, literal: Callable) -> str:
        """The SELECT of one chunk (bounds as literals made by ``literal``, the connection's escaping)."""
        columns = ", ".join(select_expression(c, quote(c.name or "")) for c in self.info.columns)
        where = key_predicate(self.schema, chunk.key_range, literal)
        return f"SELECT {columns} FROM {qualified(self.schema)} WHERE {where}"


def translate(exc: pymysql.err.MySQLError, table: str | None, grant: str) -> Exception:
    """A driver error as the dbmazz error a caller can act on (passwords redacted); ``grant`` fixes a denial."""
    code = exc.args[0] if exc.args else None
    text = redact(str(exc.args[-1] if exc.args else exc))
    if code == 1146 and table:
        return TableChangedError(
            table,
            "no longer exists in the source",
            "remove it from the pipeline's tables, or re-create it and re-sync it",
        )
    if code in _TRANSIENT:
        return TransientError(
            f"the snapshot read{f' of {table}' if table else ''} failed and may be retried: {text}"
        )
    if code in _DENIED:
        return ConfigError(f"the server refused the snapshot: {text}", hint=grant)
    return SourceError(f"the snapshot read{f' of {table}' if table else ''} failed: {text}")


class SnapshotReader:
    """Reads chunks through up to ``parallelism`` consistent-snapshot transactions (see the module docstring)."""

    def __init__(
        self,
        open_conn: Callable[[], pymysql.Connection],
        tables: dict[str, SnapshotTable],
        config: MySqlConfig,
        mariadb: bool,
    ) -> None:
        self._open = open_conn
        self._tables = tables
        self._config = config
        self._method = config.snapshot_method_for(mariadb)
        self._mariadb = mariadb
        self._lock_hint = lock_tables_grant(config)
        self._select_hint = select_grant(config)

    def read(self, chunks: Sequence[SnapshotChunk], parallelism: int) -> Iterator[Rows]:
        if not chunks:
            return
        todo: queue.Queue = queue.Queue()
        for chunk in chunks:
            todo.put(chunk)
        tables = sorted({c.table for c in chunks})
        out: queue.Queue = queue.Queue(maxsize=2 * parallelism)
        stop = threading.Event()
        workers = min(parallelism, len(chunks))
        threads = [
            threading.Thread(
                target=self._work,
                name=f"dbmazz-mysql-snapshot-{i}",
                daemon=True,
                args=(tables, todo, out, stop),
            )
            for i in range(workers)
        ]
        for thread in threads:
            thread.start()
        try:
            finished = 0
            while finished < workers:
                item = out.get()
                if item is _DONE:
                    finished += 1
                elif isinstance(item, BaseException):
                    raise item
                else:
                    yield item
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=10)

    def begin(self, conn: pymysql.Connection, tables: Sequence[str]) -> BinlogPosition:
        """Start the worker's snapshot transaction; the binlog coordinate it corresponds to."""
        if self._method == "binlog_snapshot":
            _run(conn, *_START)
            with conn.cursor() as cur:
                cur.execute("SHOW STATUS LIKE 'binlog_snapshot_%'")
                status = {str(name).lower(): value for name, value in cur.fetchall()}
            if "binlog_snapshot_position" not in status:
                raise ConfigError(
                    "this server does not report the binlog position of a consistent snapshot "
                    "(binlog_snapshot_file/position are MariaDB's)",
                    hint=f"set the source's snapshot_method to lock_tables; {self._lock_hint}",
                )
            return BinlogPosition(
                str(status["binlog_snapshot_file"]), int(status["binlog_snapshot_position"])
            )
        locker = self._open()
        try:
            _run(locker, f"SET SESSION lock_wait_timeout = {int(self._config.lock_wait_seconds)}")
            _run(locker, "LOCK TABLES " + ", ".join(f"{_qualified_name(t)} READ" for t in tables))
            try:
                _run(conn, *_START)
                return binlog_end(locker, self._mariadb)
            finally:
                _run(locker, "UNLOCK TABLES")
        finally:
            locker.close()

    def _work(self, tables: list[str], todo: queue.Queue, out: queue.Queue, stop: threading.Event) -> None:
        conn = None
        try:
            conn = self._open()
            try:
                version = self.begin(conn, tables).version
            except pymysql.err.MySQLError as exc:
                grant = self._lock_hint if self._method == "lock_tables" else self._select_hint
                raise translate(exc, None, grant) from None
            commit_ts_us = int(datetime.now(UTC).timestamp() * 1_000_000)
            while not stop.is_set():
                try:
                    chunk = todo.get_nowait()
                except queue.Empty:
                    break
                for rows in self._read_chunk(conn, chunk, version, commit_ts_us):
                    if not _put(out, rows, stop):
                        return
            _run(conn, "COMMIT")
            _put(out, _DONE, stop)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            _put(out, exc, stop)
        finally:
            if conn is not None:
                conn.close()

    def _read_chunk(
        self, conn: pymysql.Connection, chunk: SnapshotChunk, version: int, commit_ts_us: int
    ) -> Iterator[Rows]:
        table = self._tables[chunk.table]
        schema = table.schema
        arrow_types = [c.type.to_arrow() for c in schema.columns]
        try:
            for buf, starts in fetch_blocks(
                conn,
                table.statement(chunk, conn.escape),
                self._config.read_block_rows,
                self._config.read_block_bytes,
                table.check_fields,
            ):
                columns = decode_text_rows(table.info.columns, arrow_types, buf, starts)
                yield Rows(schema, _with_meta(schema, columns, len(starts), version, commit_ts_us))
        except pymysql.err.MySQLError as exc:
            raise translate(exc, chunk.table, self._select_hint) from None


def _with_meta(
    schema: TableSchema, columns: list[pa.Array], n: int, version: int, commit_ts_us: int
) -> pa.Table:
    """Snapshot rows: inserts at the snapshot's version, committed "now", no unknown columns."""
    meta = [
        pa.array(np.zeros(n, np.int8), pa.int8()),
        pa.array(np.full(n, version, np.uint64), pa.uint64()),
        pa.array(np.full(n, commit_ts_us, np.int64), pa.int64()).cast(pa.timestamp("us", tz="UTC")),
        pa.nulls(n, pa.list_(pa.string())),
    ]
    return pa.Table.from_arrays(columns + meta, schema=schema.arrow_schema())


def _grant(privilege: str, config: MySqlConfig) -> str:
    databases = sorted({t.split(".", 1)[0] for t in config.tables})
    return "; ".join(f"GRANT {privilege} ON {quote(d)}.* TO '{config.user}'@'%'" for d in databases)


def lock_tables_grant(config: MySqlConfig) -> str:
    """The statement that gives the source's user what the lock_tables method needs."""
    return _grant("LOCK TABLES", config)


def select_grant(config: MySqlConfig) -> str:
    return _grant("SELECT", config)


def _qualified_name(table: str) -> str:
    database, name = table.split(".", 1)
    return f"{quote(database)}.{quote(name)}"


def _run(conn: pymysql.Connection, *statements: str) -> None:
    with conn.cursor() as cur:
        for statement in statements:
            cur.execute(statement)


def _put(out: queue.Queue, item, stop: threading.Event) -> bool:
    while not stop.is_set():
        try:
            out.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False
