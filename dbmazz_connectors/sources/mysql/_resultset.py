"""A text-protocol result set read straight off the socket in blocks of rows, without a Python object per row.

After pymysql has sent the query and read the column definitions (``query(..., unbuffered=True)``),
the rows are packets: a 4-byte header (3-byte length, sequence id), then the row's length-encoded
values. A block is the raw bytes of many packets as they arrived; only each row's start is
recorded, and ``_text.decode_text_rows`` walks the values column by column from there. A row of
16 MiB or more spans several packets: it is joined into one.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterator

import numpy as np
import pymysql

from ._text import PAD

__all__ = ["fetch_blocks"]

_READ = 1 << 20
_MAX_PAYLOAD = 0xFFFFFF  # a payload this long continues in the next packet
_EOF, _ERR = 0xFE, 0xFF


class _Block:
    """Rows of one block: the packets' bytes (headers included) and each row's start."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.starts = array("q")

    def take(self) -> tuple[bytes, np.ndarray]:
        out = bytes(self.buf) + PAD, np.frombuffer(self.starts, np.int64).copy()
        self.buf, self.starts = bytearray(), array("q")
        return out


def _lost(conn: pymysql.Connection, detail: str) -> pymysql.err.OperationalError:
    conn._force_close()
    return pymysql.err.OperationalError(
        2013, f"Lost connection to MySQL server during a snapshot read ({detail})"
    )


def _read(conn: pymysql.Connection) -> bytes:
    try:
        data = conn._rfile.read1(_READ)
    except OSError as exc:
        raise _lost(conn, str(exc)) from None
    if not data:
        raise _lost(conn, "end of stream")
    return data


def _header_length(data: bytearray, pos: int) -> int:
    return data[pos] | data[pos + 1] << 8 | data[pos + 2] << 16


def _scan(data: bytearray, block: _Block, max_rows: int, max_bytes: int) -> tuple[int, bool]:
    """Record the complete row packets at the head of ``data`` (appended to the block next), until the block
    is full; (bytes used, result ended)."""
    pos, end, base, starts = 0, len(data), len(block.buf), block.starts
    while pos + 4 <= end and len(starts) < max_rows and base + pos < max_bytes:
        length = data[pos] | data[pos + 1] << 8 | data[pos + 2] << 16
        if pos + 4 + length > end or length == _MAX_PAYLOAD:
            break
        first = data[pos + 4] if length else 0
        if first == _EOF and length < 9:
            return pos, True
        if first == _ERR:
            pymysql.err.raise_mysql_exception(bytes(data[pos + 4 : pos + 4 + length]))
        starts.append(base + pos + 4)
        pos += 4 + length
    return pos, False


def _long_row(conn: pymysql.Connection, data: bytearray, block: _Block) -> bytearray:
    """A row of several packets at the head of ``data``, joined into the block; the data after it."""
    parts, pos = [], 0
    while True:
        while len(data) - pos < 4:
            data += _read(conn)
        length = _header_length(data, pos)
        while len(data) - pos < 4 + length:
            data += _read(conn)
        parts.append(bytes(data[pos + 4 : pos + 4 + length]))
        pos += 4 + length
        if length < _MAX_PAYLOAD:
            break
    block.starts.append(len(block.buf))
    block.buf += b"".join(parts)
    return data[pos:]


def fetch_blocks(
    conn: pymysql.Connection,
    statement: str,
    block_rows: int,
    block_bytes: int,
    check_fields: Callable[[list], None] | None = None,
) -> Iterator[tuple[bytes, np.ndarray]]:
    """The rows of ``statement`` as (raw block + PAD, row starts), about ``block_rows`` rows or ``block_bytes`` each.

    ``check_fields`` sees the result's column definitions before any row (it raises to refuse
    them). A read left unfinished (an error, or the consumer stopping) closes the connection: the
    rest of the result would otherwise be read as the answer to the next statement.
    """
    conn.query(statement, unbuffered=True)
    result = conn._result
    if result is None or not result.unbuffered_active:
        return
    block, data, done = _Block(), bytearray(), False
    try:
        if check_fields is not None:
            check_fields(result.fields)
        while True:
            used, done = _scan(data, block, block_rows, block_bytes)
            block.buf += data[:used]
            data = data[used:]
            full = len(block.starts) >= block_rows or len(block.buf) >= block_bytes
            if full or (done and block.starts):
                yield block.take()
            if done:
                break
            if full:
                continue
            if len(data) >= 4 and _header_length(data, 0) == _MAX_PAYLOAD:
                data = _long_row(conn, data, block)
            else:
                data += _read(conn)
        if len(data) > 9:
            raise pymysql.err.InternalError(f"unexpected {len(data) - 9} bytes after the end of a result set")
    finally:
        result.unbuffered_active = False
        result.connection = None
        if not done:
            conn._force_close()
