"""Reading one bounded binlog range into change events: transactions, table maps, DDL, row buffers."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

import pymysql

from ...core.batch import ChangeEvent, Heartbeat, Rows, SchemaChange, Truncate
from ...core.errors import SchemaChangeError, SourceError, TableChangedError
from ._buffer import Layout, TableBuffer, Txn
from ._ddl import is_dml, parse_ddl
from ._protocol import (
    ARTIFICIAL_FLAG,
    IGNORABLE_FLAG,
    ROWS_EVENTS,
    ROWS_V2_EVENTS,
    SKIPPED_EVENTS,
    E,
    Event,
    dump_events,
    parse_table_map,
    query_text,
    read_packed_int,
    uncompress,
)
from ._schema import TableInfo, resolve_layout, schema_from_info, schema_from_layout
from .position import BinlogPosition

__all__ = ["RangeReader", "BinlogFormatError", "UnknownEventError", "BinlogIncidentError"]

Connect = Callable[[], pymysql.Connection]
MAX_BUFFER_BYTES = 16 * 1024 * 1024  # raw row images per table before a chunk is cut (wide rows)


class BinlogFormatError(SourceError):
    """The binlog holds a row change as a statement (binlog_format is not ROW) or a partial row image."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message, hint=hint)


class UnknownEventError(SourceError):
    """The binlog holds an event type the reader does not know and the server does not mark as ignorable.

    Skipping it while the position advances could lose row changes (what a reader that passes over, say,
    compressed row events does silently), so the capture stops before it."""

    def __init__(self, kind: int, where: str) -> None:
        self.kind = kind
        super().__init__(
            f"the binlog holds an event of type {kind} at {where} that dbmazz cannot read; it may carry row "
            "changes, so the capture stops before it rather than skip it",
            hint="turn off the server feature that writes it (binlog_transaction_compression, "
            "binlog_row_value_options, a newer binlog format) and re-snapshot the pipeline's tables from a position "
            "after it, or use a dbmazz release that reads it",
        )


class BinlogIncidentError(SourceError):
    """The server logged an INCIDENT event: changes around it may be missing from the binlog (a replica stops too)."""

    def __init__(self, message: str, where: str) -> None:
        super().__init__(
            f"the server logged an incident at {where}: {message}; changes may be missing from the "
            "binlog there",
            hint="see the server's error log, then re-snapshot the pipeline's tables",
        )


class RangeReader:
    """One pass over (start, end]: yields Rows/Truncate/SchemaChange in order, then a Heartbeat.

    Rows of a transaction carry its commit event's position as version, so they are held until
    the commit is read; a transaction larger than ``chunk_rows`` asks a second reader for its
    commit position first (``find_commit``) so memory stays bounded.
    """

    def __init__(
        self,
        connect: Connect,
        tables: dict[str, TableInfo | None],
        server_id: int,
        checksum: bool,
        chunk_rows: int,
        find_commit: Callable[[str, int], tuple[int, int]],
        mariadb: bool,
        resync_floors: Mapping[str, int] | None = None,
    ) -> None:
        self.connect = connect
        # table -> floor version of its latest whole-table re-sync: a DDL the capture cannot follow at or below
        # it is superseded by that re-sync (its sweep removes every older row), so it no longer stops the capture
        self.resync_floors = dict(resync_floors or {})
        self.infos = tables
        self.server_id = server_id
        self.checksum = checksum
        self.chunk_rows = chunk_rows
        self.find_commit = find_commit
        self.mariadb = mariadb
        self.layouts: dict[bytes, Layout] = {}
        self.by_id: dict[int, TableBuffer] = {}
        self.buffers: dict[str, TableBuffer] = {}
        self.pending_ddl: dict[str, tuple[int, str]] = {}
        self.out: list[ChangeEvent] = []

    def read(self, start: BinlogPosition, end: BinlogPosition) -> Iterator[ChangeEvent]:
        self.file, self.offset = start.file, start.offset
        self.in_txn, self.txn = False, Txn()
        self.gtids = _parse_gtids(start.gtid_set) if self.mariadb else {}
        boundary = start
        if end > start:
            conn = self.connect()
            try:
                for event in dump_events(conn, start.file, start.offset, self.server_id, self.checksum):
                    self._dispatch(event)
                    if self.out:
                        yield from self.out
                        self.out.clear()
                    if not self.in_txn and not event.flags & ARTIFICIAL_FLAG and event.log_pos:
                        boundary = BinlogPosition(self.file, self.offset, self._gtid_text(start))
                        if boundary >= end:
                            break
            finally:
                conn.close()
        for table in list(self.buffers):
            self._flush(table)
        yield from self.out
        self.out.clear()
        yield Heartbeat(boundary)

    def _gtid_text(self, start: BinlogPosition) -> str | None:
        if not self.mariadb:
            return None
        return ",".join(self.gtids[d] for d in sorted(self.gtids)) or start.gtid_set

    def _dispatch(self, event: Event) -> None:
        kind = event.type
        if kind in ROWS_EVENTS:
            self._on_rows(event, ROWS_EVENTS[kind])
        elif kind == E.TABLE_MAP:
            self._on_table_map(event)
        elif kind == E.XID:
            self._on_commit(event)
        elif kind in (E.QUERY, E.QUERY_COMPRESSED):
            self._on_query(event)
        elif kind == E.MARIADB_GTID:
            self._on_mariadb_gtid(event)
        elif kind == E.ROTATE:
            position = int.from_bytes(event.body[:8], "little")
            self.file, self.offset = event.body[8:].decode(), position
            return
        elif kind == E.FORMAT_DESCRIPTION or kind in SKIPPED_EVENTS:
            pass
        elif kind in (E.PARTIAL_UPDATE, E.TRANSACTION_PAYLOAD):
            raise BinlogFormatError(
                f"the binlog holds a compressed or partial event (type {kind}) dbmazz cannot read",
                hint="SET GLOBAL binlog_transaction_compression = OFF, binlog_row_value_options = ''",
            )
        elif kind == E.INCIDENT:
            size = event.body[2] if len(event.body) > 2 else 0
            text = bytes(event.body[3 : 3 + size]).decode("utf-8", errors="replace") or "no message"
            raise BinlogIncidentError(text, self._where(event))
        elif not event.flags & IGNORABLE_FLAG:
            raise UnknownEventError(kind, self._where(event))
        if event.log_pos and not event.flags & ARTIFICIAL_FLAG and kind != E.FORMAT_DESCRIPTION:
            self.offset = event.log_pos

    def _where(self, event: Event) -> str:
        return f"{self.file}:{self.offset} (event ending at {event.log_pos})"

    def _on_table_map(self, event: Event) -> None:
        body = event.body
        table_id = int.from_bytes(body[:6], "little")
        name = _table_map_name(body)
        if name not in self.infos:
            self.by_id.pop(table_id, None)
            return
        key = bytes(body[8:])
        layout = self.layouts.get(key)
        if layout is None:
            _, tmap = parse_table_map(body)
            columns, primary_key = resolve_layout(tmap, self.infos[name])
            layout = Layout.build(
                schema_from_layout(tmap.database, tmap.table, columns, primary_key), columns
            )
            self.layouts[key] = layout
        buffer = self.buffers.get(name)
        if buffer is None or buffer.layout is not layout:
            buffer = self._switch_layout(name, buffer, layout)
        self.by_id[table_id] = buffer

    def _switch_layout(self, name: str, old: TableBuffer | None, layout: Layout) -> TableBuffer:
        version, ddl = self.pending_ddl.pop(name, (self._position_version(), None))
        if old is not None:
            self._flush(name)
            if old.layout.schema != layout.schema:  # not when only the physical layout changed
                self.out.append(SchemaChange(layout.schema, version, ddl))
        elif ddl is not None:  # re-created after a DROP, or altered before its first rows in this range
            self.out.append(SchemaChange(layout.schema, version, ddl))
        buffer = self.buffers[name] = TableBuffer(layout)
        return buffer

    def _on_rows(self, event: Event, kind: int) -> None:
        body = event.body
        buffer = self.by_id.get(int.from_bytes(body[:6], "little"))
        if buffer is None:
            return
        offset = 8
        if event.type in ROWS_V2_EVENTS:
            offset += body[8] | body[9] << 8
        ncols, offset = read_packed_int(body, offset)
        bitmaps = 2 if kind == 1 else 1
        full = _full_bitmap(ncols) * bitmaps
        if ncols != len(buffer.layout.columns) or body[offset : offset + len(full)] != full:
            raise BinlogFormatError(
                f"a row event of {buffer.layout.schema.qualified_name} does not carry every column",
                hint="SET GLOBAL binlog_row_image = 'FULL' (and in the server config)",
            )
        images = offset + len(full)
        if (
            event.type in E.COMPRESSED_ROWS
        ):  # MariaDB compresses the row images only, after the column bitmaps
            body = bytes(body[:images]) + uncompress(
                memoryview(body)[images:],
                f"compressed rows of {buffer.layout.schema.qualified_name} at {self._where(event)}",
            )
        buffer.add(kind, body, images, self.txn)
        if self.in_txn and self._full(buffer):
            if self.txn.version is None:
                self.txn.version, self.txn.commit_ts_us = self.find_commit(self.file, event.log_pos)
            self._flush(buffer.layout.schema.qualified_name)

    def _on_commit(self, event: Event) -> None:
        self.txn.version = BinlogPosition(self.file, event.log_pos).version
        self.txn.commit_ts_us = event.timestamp * 1_000_000
        self.in_txn, self.txn = False, Txn()
        for name, buffer in self.buffers.items():
            if self._full(buffer):
                self._flush(name)

    def _full(self, buffer: TableBuffer) -> bool:
        return buffer.images >= self.chunk_rows or len(buffer.buf) >= MAX_BUFFER_BYTES

    def _on_mariadb_gtid(self, event: Event) -> None:
        seq = int.from_bytes(event.body[:8], "little")
        domain = int.from_bytes(event.body[8:12], "little")
        self.gtids[domain] = f"{domain}-{event.server_id}-{seq}"
        self.in_txn = not event.body[12] & 1  # FL_STANDALONE: a DDL without BEGIN/COMMIT
        self.txn = Txn()

    def _on_query(self, event: Event) -> None:
        database, raw = query_text(event)
        query = raw.decode("utf-8", errors="replace")
        head = query.lstrip()[:9].upper()
        if head.startswith("BEGIN") or head.startswith("XA START"):
            self.in_txn, self.txn = True, Txn()
        elif head.startswith("COMMIT") or head.startswith("ROLLBACK") or head.startswith("XA END"):
            self._on_commit(event)
        elif is_dml(query):
            self._check_statement(query)
        else:
            self._on_ddl(event, query, database)

    def _check_statement(self, query: str) -> None:
        lowered = query.lower()
        if any(name.split(".", 1)[1].lower() in lowered for name in self.infos):
            raise BinlogFormatError(
                "a change to a replicated table was logged as a statement, not as row images",
                hint="SET GLOBAL binlog_format = 'ROW' (and binlog_format=ROW in the server config), "
                "then re-snapshot the tables changed since",
            )

    def _on_ddl(self, event: Event, query: str, database: str) -> None:
        """Follow DDL on a replicated table in order with its rows (README, "Schemas").

        TRUNCATE, DROP and CREATE OR REPLACE empty the table: a ``Truncate`` at the statement's
        position (its version is below every later commit, so every row the table gets later
        survives it, and every older row goes). The rows of a table created later all come as
        row events. A rename, or rows moved in or out without row events (partition exchange,
        tablespace import), cannot be followed: ``TableChangedError``, never silent rows.
        """
        position = BinlogPosition(self.file, event.log_pos)
        for target in parse_ddl(query, database):
            if target.table not in self.infos:
                continue
            self._flush(target.table)
            superseded = position.version <= self.resync_floors.get(target.table, -1)  # the re-sync saw it
            if superseded and target.action in ("rename", "rows", "drop", "replace"):
                continue  # the re-sync's sweep removes every row older than its floor
            if target.action in ("rename", "rows"):
                raise table_changed(target.table, target.action, position, query)
            if target.action in ("truncate", "drop", "replace"):
                if target.action != "truncate" and self.infos[target.table] is None:
                    raise table_changed(target.table, "gone", position, query)
                self._announce(target.table, position.version)
                self.out.append(Truncate(target.table, position.version, event.timestamp * 1_000_000))
            if target.action != "truncate":
                self.pending_ddl[target.table] = (position.version, query.strip())
                if target.action in ("drop", "replace"):
                    self.buffers.pop(target.table, None)

    def _announce(self, table: str, version: int) -> None:
        """Before a table's first event of this read that carries no schema (a truncate), say its schema."""
        if table in self.buffers:
            return
        info = self.infos.get(table)
        if info is None:
            raise SchemaChangeError(
                f"table {table} was emptied or dropped and no longer exists",
                hint="remove it from the pipeline's tables (and drop it in the sinks)",
            )
        self.out.append(SchemaChange(schema_from_info(info), version, None))

    def _flush(self, table: str) -> None:
        buffer = self.buffers.get(table)
        if buffer is not None and buffer.images:
            self.out.append(Rows(buffer.layout.schema, buffer.take_rows()))

    def _position_version(self) -> int:
        return BinlogPosition(self.file, self.offset).version


_FULL_BITMAPS: dict[int, bytes] = {}


def _full_bitmap(ncols: int) -> bytes:
    bitmap = _FULL_BITMAPS.get(ncols)
    if bitmap is None:
        bitmap = _FULL_BITMAPS[ncols] = ((1 << ncols) - 1).to_bytes((ncols + 7) // 8, "little")
    return bitmap


_CHANGED = {
    "rename": "was renamed",
    "rows": "had rows moved in or out without row events",
    "gone": "was dropped and does not exist now",
}


def table_changed(table: str, kind: str, position: BinlogPosition, query: str) -> TableChangedError:
    """The error for a DDL the capture cannot follow: what happened, where, and how to re-sync the table."""
    if kind == "gone":
        fix = (
            f"remove {table} from the pipeline's tables (the sinks keep their copy), or re-create it (the "
            "next capture then follows it from its drop)"
        )
    else:
        fix = (
            f"re-sync it: a snapshot of the whole table planned now supersedes everything before it, and the "
            f"capture then passes {position} (a table renamed away must be renamed back, or the pipeline's "
            "tables changed, first)"
        )
    return TableChangedError(table, f"{_CHANGED[kind]} at {position} ({' '.join(query.split())[:200]})", fix)


def _table_map_name(body: bytes) -> str:
    db_len = body[8]
    database = bytes(body[9 : 9 + db_len]).decode()
    pos = 10 + db_len
    return database + "." + bytes(body[pos + 1 : pos + 1 + body[pos]]).decode()


def _parse_gtids(text: str | None) -> dict[int, str]:
    out = {}
    for part in (text or "").split(","):
        part = part.strip()
        if part.count("-") == 2:
            out[int(part.split("-")[0])] = part
    return out
