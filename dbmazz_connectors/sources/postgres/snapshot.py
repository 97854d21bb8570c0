"""Snapshot reads of PostgreSQL tables: primary-key chunks through binary COPY, straight into Arrow.

Consistency: one read of a set of chunks creates a *temporary logical slot* on a replication
connection with ``EXPORT_SNAPSHOT``. PostgreSQL guarantees the exported snapshot shows exactly the
transactions whose commit record lies before the slot's consistent point ``C``; every transaction
committing at or after ``C`` is one the slot (and so the pipeline's own, older slot) decodes. The
rows are therefore versioned ``C - 1``: every later change has a higher version (it commits at or
after ``C``), every earlier one is already in the rows. The worker connections import the
snapshot (``SET TRANSACTION SNAPSHOT``) and read their chunks in REPEATABLE READ, READ ONLY
transactions; no lock beyond ACCESS SHARE is taken. A WAL position read beside a SELECT would not
do: the order in which transactions become visible differs from the order of their commit records.
"""

from __future__ import annotations

import queue
import threading
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime

import numpy as np
import psycopg
import pyarrow as pa
from psycopg import sql

from ...core.batch import Rows
from ...core.errors import SourceError
from ...core.positions import Lsn
from ...core.schema import TableSchema
from ...core.snapshot import FULL_RANGE, KeyRange, SnapshotChunk
from ._catalog import split_table
from ._reader import copy_blocks
from ._rows import PADDING, _views, be_int
from ._convert import convert_column

__all__ = ["plan_chunks", "SnapshotReader", "decode_copy_block", "key_predicate"]

_DONE = object()


def key_predicate(key: Sequence[str], key_range: KeyRange) -> sql.Composable:
    """``(k1, k2) >= (...) AND (k1, k2) < (...)`` for a key range (``TRUE`` when unbounded)."""
    row = sql.SQL("({})").format(sql.SQL(", ").join(sql.Identifier(k) for k in key))
    parts = []
    for bound, op in ((key_range.lower, ">="), (key_range.upper, "<")):
        if bound is not None:
            if len(bound) != len(key):
                raise SourceError(f"expected a key bound of {len(key)} values for key {list(key)}, got {list(bound)}")
            values = sql.SQL("({})").format(sql.SQL(", ").join(sql.Literal(str(v)) for v in bound))
            parts.append(sql.SQL("{} {} {}").format(row, sql.SQL(op), values))
    return sql.SQL(" AND ").join(parts) if parts else sql.SQL("TRUE")


def plan_chunks(conn: psycopg.Connection, schema: TableSchema, chunk_rows: int,
                key_range: KeyRange = FULL_RANGE) -> list[KeyRange]:
    """Walk the primary-key index in steps of ``chunk_rows`` keys; bounds are the keys' text forms."""
    key = schema.primary_key
    table = sql.Identifier(*split_table(schema.qualified_name))
    order = sql.SQL(", ").join(sql.Identifier(k) for k in key)
    texts = sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(k)) for k in key)
    bounds: list[tuple[str, ...]] = []
    lower = key_range.lower
    while True:
        where = key_predicate(key, KeyRange(lower, key_range.upper))
        query = sql.SQL("SELECT {} FROM {} WHERE {} ORDER BY {} OFFSET {} LIMIT 1").format(
            texts, table, where, order, sql.Literal(chunk_rows))
        row = conn.execute(query).fetchone()
        if row is None:
            break
        bounds.append(tuple(row))
        lower = tuple(row)
    edges = [key_range.lower, *bounds, key_range.upper]
    return [KeyRange(edges[i], edges[i + 1]) for i in range(len(edges) - 1)]


def decode_copy_block(buf: bytearray, lengths: Sequence[int], schema: TableSchema, version: int,
                      commit_ts_us: int) -> pa.Table:
    """Rows of a binary COPY of ``SELECT col::text, ...`` (one block) as snapshot inserts.

    Each row: int16 field count, then per field an int32 length (-1: NULL) and the text. The walk
    goes column by column over all rows at once; values become string views into ``buf``.
    """
    lengths = np.asarray(lengths, np.int64)
    n = len(lengths)
    buf += PADDING
    b = np.frombuffer(buf, np.uint8)
    data = pa.py_buffer(buf)
    starts = np.cumsum(lengths) - lengths
    ncols = len(schema.columns)
    counts = be_int(b, starts, 2)
    if n and not (counts == ncols).all():
        raise SourceError(f"snapshot of {schema.qualified_name}: expected {ncols} columns, got {sorted(set(counts))}")
    pos = starts + 2
    columns = []
    for column in schema.columns:
        size = be_int(b, pos, 4)
        valid = size >= 0
        size = np.maximum(size, 0)
        text = _views(b, data, pos + 4, size, valid, pa.string_view())
        columns.append(convert_column(text, column.type, schema.qualified_name, column.name))
        pos = pos + 4 + size
    columns += [
        pa.array(np.zeros(n, np.int8), pa.int8()),
        pa.array(np.full(n, version, np.uint64), pa.uint64()),
        pa.array(np.full(n, commit_ts_us, np.int64), pa.int64()).cast(pa.timestamp("us", tz="UTC")),
        pa.nulls(n, pa.list_(pa.string())),
    ]
    return pa.Table.from_arrays(columns, schema=schema.arrow_schema())


class SnapshotReader:
    """Reads chunks of one source through one exported snapshot, ``parallelism`` connections at once."""

    def __init__(self, open_conn, session_sql: str, schemas: dict[str, TableSchema], block_rows: int,
                 block_bytes: int, replication_kwargs: dict) -> None:
        self._open = open_conn
        self._session = session_sql
        self._schemas = schemas
        self._block_rows = block_rows
        self._block_bytes = block_bytes
        self._replication_kwargs = replication_kwargs

    def _export(self) -> tuple[psycopg.Connection, Lsn, str]:
        """A temporary logical slot on a replication connection: its consistent point and exported snapshot."""
        conn = psycopg.connect(**self._replication_kwargs, replication="database", autocommit=True)
        name = f"dbmazz_snap_{uuid.uuid4().hex[:12]}"
        result = conn.pgconn.exec_(f"CREATE_REPLICATION_SLOT {name} TEMPORARY LOGICAL pgoutput EXPORT_SNAPSHOT".encode())
        if result.status != psycopg.pq.ExecStatus.TUPLES_OK:
            message = (result.error_message or b"").decode(errors="replace").strip()
            conn.close()
            raise SourceError(f"postgres refused a temporary slot for the snapshot: {message}",
                              hint="the source role needs REPLICATION and a free replication slot "
                                   "(max_replication_slots)")
        consistent_point = Lsn.parse(result.get_value(0, 1).decode())
        snapshot_name = result.get_value(0, 2).decode()
        return conn, consistent_point, snapshot_name

    def read(self, chunks: Sequence[SnapshotChunk], parallelism: int) -> Iterator[Rows]:
        if not chunks:
            return
        exporter, consistent_point, snapshot_name = self._export()
        version = consistent_point.value - 1
        commit_ts_us = int(datetime.now(UTC).timestamp() * 1_000_000)
        todo: queue.Queue = queue.Queue()
        for chunk in chunks:
            todo.put(chunk)
        out: queue.Queue = queue.Queue(maxsize=2 * parallelism)
        stop = threading.Event()
        workers = min(parallelism, len(chunks))
        imported = threading.Barrier(workers + 1)
        threads = [threading.Thread(target=self._work, name=f"dbmazz-pg-snapshot-{i}", daemon=True,
                                    args=(snapshot_name, todo, out, stop, imported, version, commit_ts_us))
                   for i in range(workers)]
        for thread in threads:
            thread.start()
        try:
            try:
                imported.wait(timeout=60)  # every worker holds the snapshot: the exporter may go
            except threading.BrokenBarrierError:
                pass  # a worker failed before importing; its error is in ``out``
            exporter.close()
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
            exporter.close()
            for thread in threads:
                thread.join(timeout=10)

    def _work(self, snapshot_name: str, todo: queue.Queue, out: queue.Queue, stop: threading.Event,
              imported: threading.Barrier, version: int, commit_ts_us: int) -> None:
        conn = None
        try:
            conn = self._open()
            conn.execute(self._session)
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot_name)))
            imported.wait(timeout=60)
            while not stop.is_set():
                try:
                    chunk = todo.get_nowait()
                except queue.Empty:
                    break
                schema = self._schemas[chunk.table]
                for rows in self._read_chunk(conn, schema, chunk, version, commit_ts_us):
                    _put(out, rows, stop)
            conn.execute("COMMIT")
            _put(out, _DONE, stop)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            imported.abort()
            _put(out, exc, stop)
        finally:
            if conn is not None:
                conn.close()

    def _read_chunk(self, conn, schema: TableSchema, chunk: SnapshotChunk, version: int,
                    commit_ts_us: int) -> Iterator[Rows]:
        table = sql.Identifier(*split_table(schema.qualified_name))
        texts = sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(c.name)) for c in schema.columns)
        statement = sql.SQL("COPY (SELECT {} FROM {} WHERE {}) TO STDOUT (FORMAT binary)").format(
            texts, table, key_predicate(schema.primary_key, chunk.key_range)).as_bytes(conn)
        for buf, lengths in copy_blocks(conn.pgconn, statement, self._block_rows, self._block_bytes):
            yield Rows(schema, decode_copy_block(buf, lengths, schema, version, commit_ts_us))


def _put(out: queue.Queue, item, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            out.put(item, timeout=0.1)
            return
        except queue.Full:
            continue
