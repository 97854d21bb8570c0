"""The binlog wire protocol: a COM_BINLOG_DUMP reader over pymysql and the parsing of TABLE_MAP events.

Only what capture needs: framing (header, checksum), and the events that carry positions,
transaction boundaries, DDL and table layouts. Row payloads are left as bytes for ``_rows``.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import pymysql

from ...core.errors import SourceError, TransientError, redact
from .types import CHARACTER_TYPES, NUMERIC_TYPES, ColumnLayout, T

__all__ = [
    "E",
    "Event",
    "TableMap",
    "dump_events",
    "parse_table_map",
    "read_packed_int",
    "DumpError",
    "CompressedEventError",
    "uncompress",
    "query_text",
]


class E:
    """Binlog event type codes (MySQL, then MariaDB-only)."""

    QUERY, STOP, ROTATE, INTVAR, FORMAT_DESCRIPTION, XID, TABLE_MAP = 2, 3, 4, 5, 15, 16, 19
    RAND, USER_VAR = 13, 14
    PRE_GA_ROWS = frozenset({20, 21, 22})
    WRITE_V1, UPDATE_V1, DELETE_V1, INCIDENT, HEARTBEAT, IGNORABLE, ROWS_QUERY = 23, 24, 25, 26, 27, 28, 29
    WRITE_V2, UPDATE_V2, DELETE_V2, MYSQL_GTID, ANONYMOUS_GTID, PREVIOUS_GTIDS = 30, 31, 32, 33, 34, 35
    TRANSACTION_CONTEXT, VIEW_CHANGE, XA_PREPARE = 36, 37, 38
    PARTIAL_UPDATE, TRANSACTION_PAYLOAD, HEARTBEAT_V2, GTID_TAGGED = 39, 40, 41, 42
    ANNOTATE_ROWS, BINLOG_CHECKPOINT, MARIADB_GTID, GTID_LIST, START_ENCRYPTION = 160, 161, 162, 163, 164
    # MariaDB's compressed binlog (log_bin_compress=ON): the query text, or the row images, zlib-compressed
    QUERY_COMPRESSED = 165
    WRITE_COMPRESSED_V1, UPDATE_COMPRESSED_V1, DELETE_COMPRESSED_V1 = 166, 167, 168
    WRITE_COMPRESSED_V2, UPDATE_COMPRESSED_V2, DELETE_COMPRESSED_V2 = 169, 170, 171
    COMPRESSED_ROWS = frozenset({166, 167, 168, 169, 170, 171})


# rows event type -> 0 insert, 1 update, 2 delete
ROWS_EVENTS = {
    E.WRITE_V1: 0,
    E.WRITE_V2: 0,
    E.UPDATE_V1: 1,
    E.UPDATE_V2: 1,
    E.DELETE_V1: 2,
    E.DELETE_V2: 2,
    E.WRITE_COMPRESSED_V1: 0,
    E.UPDATE_COMPRESSED_V1: 1,
    E.DELETE_COMPRESSED_V1: 2,
    E.WRITE_COMPRESSED_V2: 0,
    E.UPDATE_COMPRESSED_V2: 1,
    E.DELETE_COMPRESSED_V2: 2,
}
# rows events whose post-header carries MySQL 5.6's extra-data block
ROWS_V2_EVENTS = frozenset(
    {
        E.WRITE_V2,
        E.UPDATE_V2,
        E.DELETE_V2,
        E.WRITE_COMPRESSED_V2,
        E.UPDATE_COMPRESSED_V2,
        E.DELETE_COMPRESSED_V2,
    }
)
# events that carry nothing capture needs and may be passed over (positions still advance past them)
SKIPPED_EVENTS = frozenset(
    {
        E.STOP,
        E.INTVAR,
        E.RAND,
        E.USER_VAR,
        E.HEARTBEAT,
        E.IGNORABLE,
        E.ROWS_QUERY,
        E.MYSQL_GTID,
        E.ANONYMOUS_GTID,
        E.PREVIOUS_GTIDS,
        E.TRANSACTION_CONTEXT,
        E.VIEW_CHANGE,
        E.XA_PREPARE,
        E.HEARTBEAT_V2,
        E.GTID_TAGGED,
        E.ANNOTATE_ROWS,
        E.BINLOG_CHECKPOINT,
        E.GTID_LIST,
        E.START_ENCRYPTION,
    }
)
ARTIFICIAL_FLAG = 0x20
IGNORABLE_FLAG = (
    0x80  # LOG_EVENT_IGNORABLE_F: the server says a reader that does not know the event may skip it
)
_HEADER = struct.Struct("<IBIIIH")
_COM_BINLOG_DUMP = 0x12
_DUMP_NON_BLOCK = 0x01


class DumpError(SourceError):
    """The server refused or broke the binlog dump (``code`` is the server's error number)."""

    def __init__(self, message: str, code: int | None) -> None:
        self.code = code
        super().__init__(message)


class CompressedEventError(SourceError):
    """A compressed binlog event (MariaDB log_bin_compress) whose payload cannot be decompressed."""

    def __init__(self, message: str) -> None:
        super().__init__(
            message,
            hint="check the binlog with mariadb-binlog --verbose at that position; if it "
            "is damaged, re-snapshot the pipeline's tables from a position after it",
        )


def uncompress(buf: bytes | memoryview, what: str) -> bytes:
    """The payload of a MariaDB compressed event (``binlog_buf_uncompress``).

    One header byte: bit 7 set, bits 4-6 the algorithm (0 = zlib, the only one), bits 0-2 how many bytes
    (1-4) hold the uncompressed length, big-endian; then that length and a zlib stream.
    """
    if not buf or buf[0] & 0x80 == 0:
        raise CompressedEventError(f"{what}: a compressed event without its compression header")
    algorithm, lenlen = buf[0] >> 4 & 0x07, buf[0] & 0x07
    if algorithm != 0 or not 1 <= lenlen <= 4 or len(buf) < 1 + lenlen:
        raise CompressedEventError(
            f"{what}: unknown compression (algorithm {algorithm}, length of length {lenlen}); "
            "only zlib is known"
        )
    length = int.from_bytes(buf[1 : 1 + lenlen], "big")
    try:
        data = zlib.decompress(buf[1 + lenlen :])
    except zlib.error as exc:
        raise CompressedEventError(f"{what}: the zlib payload is damaged ({exc})") from None
    if len(data) != length:
        raise CompressedEventError(f"{what}: decompressed to {len(data)} bytes, its header says {length}")
    return data


def query_text(event: Event) -> tuple[str, bytes]:
    """(default database, statement) of a QUERY or QUERY_COMPRESSED event."""
    body = event.body
    db_len, status_len = body[8], body[11] | body[12] << 8
    pos = 13 + status_len
    database = bytes(body[pos : pos + db_len]).decode()
    query = body[pos + db_len + 1 :]
    if event.type == E.QUERY_COMPRESSED:
        return database, uncompress(query, f"a compressed statement ending at binlog offset {event.log_pos}")
    return database, bytes(query)


@dataclass(frozen=True, slots=True)
class Event:
    """One binlog event: header fields and the body without header and checksum."""

    type: int
    timestamp: int
    server_id: int
    log_pos: int  # end of this event in its file (0 for some artificial events)
    flags: int
    body: bytes


def read_packed_int(buf: bytes, pos: int) -> tuple[int, int]:
    """A length-encoded integer at ``pos``: (value, next position)."""
    first = buf[pos]
    if first < 251:
        return first, pos + 1
    if first == 0xFC:
        return buf[pos + 1] | buf[pos + 2] << 8, pos + 3
    if first == 0xFD:
        return int.from_bytes(buf[pos + 1 : pos + 4], "little"), pos + 4
    return int.from_bytes(buf[pos + 1 : pos + 9], "little"), pos + 9


def dump_events(
    conn: pymysql.Connection, file: str, offset: int, server_id: int, checksum: bool
) -> Iterator[Event]:
    """Stream events from (file, offset) until the end of the server's binlog (non-blocking dump)."""
    conn.query("SET @master_binlog_checksum = @@global.binlog_checksum")
    conn.query("SET @mariadb_slave_capability = 4")
    conn._execute_command(
        _COM_BINLOG_DUMP, struct.pack("<IHI", offset, _DUMP_NON_BLOCK, server_id) + file.encode()
    )
    trailer = 4 if checksum else 0
    unpack = _HEADER.unpack_from
    while True:
        try:
            data = conn._read_packet()._data
        except pymysql.err.MySQLError as exc:
            code = exc.args[0] if exc.args else None
            text = redact(str(exc.args[1] if len(exc.args) > 1 else exc))
            if code in (2013, 2006):
                raise TransientError(f"lost the binlog connection: {text}") from None
            raise DumpError(
                f"the server stopped the binlog dump from {file}:{offset}: {text}", code
            ) from None
        if data[0] == 0xFE and len(data) < 9:
            return  # EOF: the end of the binlog (non-blocking dump)
        timestamp, type_code, server, _size, log_pos, flags = unpack(data, 1)
        yield Event(type_code, timestamp, server, log_pos, flags, data[20 : len(data) - trailer])


@dataclass(frozen=True)
class TableMap:
    """A table's layout as its TABLE_MAP event describes it."""

    database: str
    table: str
    columns: tuple[ColumnLayout, ...]
    primary_key: tuple[int, ...] | None  # None without binlog_row_metadata=FULL

    @property
    def qualified_name(self) -> str:
        return f"{self.database}.{self.table}"

    @property
    def has_names(self) -> bool:
        return all(c.name is not None for c in self.columns)


def _read_meta(code: int, meta: bytes, pos: int) -> tuple[int, int, int]:
    """(type code, metadata, next position): ENUM/SET hidden in STRING metadata are resolved."""
    if code in (T.FLOAT, T.DOUBLE, T.BLOB, T.GEOMETRY, T.JSON, T.TIME2, T.DATETIME2, T.TIMESTAMP2):
        return code, meta[pos], pos + 1
    if code in (T.VARCHAR, T.VAR_STRING):
        return code, meta[pos] | meta[pos + 1] << 8, pos + 2
    if code == T.NEWDECIMAL:  # precision, scale
        return code, meta[pos] << 8 | meta[pos + 1], pos + 2
    if code == T.BIT:  # bits % 8, bytes -> kept as bytes << 8 | bits % 8
        return code, meta[pos + 1] << 8 | meta[pos], pos + 2
    if code in (T.STRING, T.ENUM, T.SET):
        byte0, byte1 = meta[pos], meta[pos + 1]
        real = byte0 if (byte0 & 0x30) == 0x30 else byte0 | 0x30
        if real in (T.ENUM, T.SET):
            return real, byte1, pos + 2
        return T.STRING, byte0 << 8 | byte1, pos + 2
    return code, 0, pos


def parse_table_map(body: bytes) -> tuple[int, TableMap]:
    """(table id, layout) of a TABLE_MAP event body."""
    table_id = int.from_bytes(body[0:6], "little")
    pos = 8
    db_len = body[pos]
    database = body[pos + 1 : pos + 1 + db_len].decode()
    pos += db_len + 2
    tbl_len = body[pos]
    table = body[pos + 1 : pos + 1 + tbl_len].decode()
    pos += tbl_len + 2
    ncols, pos = read_packed_int(body, pos)
    raw_types = body[pos : pos + ncols]
    pos += ncols
    meta_len, pos = read_packed_int(body, pos)
    meta, pos = body[pos : pos + meta_len], pos + meta_len
    nulls = int.from_bytes(body[pos : pos + (ncols + 7) // 8], "little")
    pos += (ncols + 7) // 8
    types, metas, mpos = [], [], 0
    for code in raw_types:
        code, value, mpos = _read_meta(code, meta, mpos)
        types.append(code)
        metas.append(value)
    optional = _parse_optional(body, pos, types)
    columns = tuple(
        ColumnLayout(
            types[i],
            metas[i],
            bool(nulls >> i & 1),
            i in optional.unsigned,
            optional.collations.get(i),
            optional.names[i] if optional.names else None,
            optional.labels.get(i, ()),
        )
        for i in range(ncols)
    )
    return table_id, TableMap(database, table, columns, optional.primary_key)


class _Optional:
    __slots__ = ("unsigned", "collations", "names", "labels", "primary_key")

    def __init__(self) -> None:
        self.unsigned: set[int] = set()
        self.collations: dict[int, int] = {}
        self.names: list[str] = []
        self.labels: dict[int, tuple[str, ...]] = {}
        self.primary_key: tuple[int, ...] | None = None


def _parse_optional(body: bytes, pos: int, types: list[int]) -> _Optional:
    """The optional metadata (binlog_row_metadata MINIMAL: signedness, charsets; FULL: also names, labels, PK)."""
    out = _Optional()
    numeric = [i for i, t in enumerate(types) if t in NUMERIC_TYPES]
    character = [i for i, t in enumerate(types) if t in CHARACTER_TYPES]
    while pos < len(body):
        kind = body[pos]
        length, pos = read_packed_int(body, pos + 1)
        value, pos = body[pos : pos + length], pos + length
        if kind == 1:  # SIGNEDNESS, most significant bit first
            out.unsigned = {col for n, col in enumerate(numeric) if value[n // 8] >> (7 - n % 8) & 1}
        elif kind == 2:  # DEFAULT_CHARSET: default, then (character column number, collation) exceptions
            default, p = read_packed_int(value, 0)
            out.collations = dict.fromkeys(character, default)
            while p < len(value):
                n, p = read_packed_int(value, p)
                coll, p = read_packed_int(value, p)
                out.collations[character[n]] = coll
        elif kind == 3:  # COLUMN_CHARSET
            p = 0
            for col in character:
                out.collations[col], p = read_packed_int(value, p)
        elif kind == 4:
            out.names = [s.decode() for s in _strings(value, len(types))]
        elif kind in (5, 6):  # SET_STR_VALUE, ENUM_STR_VALUE
            wanted = T.SET if kind == 5 else T.ENUM
            p = 0
            for col in [i for i, t in enumerate(types) if t == wanted]:
                count, p = read_packed_int(value, p)
                labels, p = _counted_strings(value, p, count)
                out.labels[col] = tuple(_label(s) for s in labels)
        elif kind == 8:  # SIMPLE_PRIMARY_KEY
            out.primary_key = tuple(_packed_ints(value))
        elif kind == 9:  # PRIMARY_KEY_WITH_PREFIX: (column, prefix) pairs
            out.primary_key = tuple(_packed_ints(value))[0::2]
    return out


def _packed_ints(value: bytes) -> list[int]:
    out, p = [], 0
    while p < len(value):
        n, p = read_packed_int(value, p)
        out.append(n)
    return out


def _strings(value: bytes, count: int) -> list[bytes]:
    return _counted_strings(value, 0, count)[0]


def _counted_strings(value: bytes, p: int, count: int) -> tuple[list[bytes], int]:
    out = []
    for _ in range(count):
        n, p = read_packed_int(value, p)
        out.append(value[p : p + n])
        p += n
    return out, p


def _label(raw: bytes) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors="replace")
