"""Receive a binary COPY stream in blocks of rows, on a thread, so receiving overlaps decoding.

psycopg's ``Copy`` iterator costs a few microseconds per row; pgoutput sends one row per
change, so rows are taken straight from libpq (``PGconn.get_copy_data``, which releases the
GIL while it waits) and handed over in blocks through a small bounded queue (memory stays
bounded: at most ``QUEUE_BLOCKS`` blocks wait).
"""

from __future__ import annotations

import queue
import select
import threading
from collections.abc import Iterator

from psycopg import pq

from .decoder import COPY_SIGNATURE

__all__ = ["copy_blocks", "CopyFailed", "Block"]

QUEUE_BLOCKS = 2
_HEADER = len(COPY_SIGNATURE) + 8  # signature, int32 flags, int32 header-extension length
_DONE = object()

# A block: the rows concatenated (each still with its 6-byte COPY row header), and each row's length.
Block = tuple[bytearray, list[int]]


class CopyFailed(Exception):
    """The server rejected or aborted the COPY; ``message`` is its error text, ``sqlstate`` its code."""

    def __init__(self, message: str, sqlstate: str | None) -> None:
        super().__init__(message)
        self.message = message
        self.sqlstate = sqlstate


def _error(result) -> CopyFailed:
    message = (result.error_message or b"").decode(errors="replace").strip()
    sqlstate = result.error_field(pq.DiagnosticField.SQLSTATE)
    return CopyFailed(message, sqlstate.decode() if sqlstate else None)


def _strip_header(row: memoryview) -> memoryview:
    if bytes(row[: len(COPY_SIGNATURE)]) != COPY_SIGNATURE:
        raise CopyFailed("expected a binary COPY stream from postgres, got something else", None)
    extension = int.from_bytes(row[len(COPY_SIGNATURE) + 4: _HEADER], "big")
    return row[_HEADER + extension:]


def _receive(pgconn, block_rows: int, block_bytes: int, out: queue.Queue, stop: threading.Event) -> None:
    """Drain the COPY into blocks. Rows are copied into one bytearray at once so libpq reuses its
    buffers; the non-blocking read keeps the GIL while rows are buffered (one hand-over per block,
    not per row) and waits on the socket with select, which releases it."""
    try:
        get, consume, sock = pgconn.get_copy_data, pgconn.consume_input, pgconn.socket
        first = True
        buf, lengths = bytearray(), []
        while not stop.is_set():
            nbytes, row = get(1)
            if nbytes == 0:
                select.select([sock], [], [], 1.0)
                consume()
                continue
            if nbytes < 0:
                break
            if first:
                row, first = _strip_header(row), False
                nbytes = len(row)
                if not nbytes:
                    continue
            if nbytes == 2:  # the trailer, b"\xff\xff": a real row has at least 7 bytes
                continue
            buf += row
            lengths.append(nbytes)
            if len(lengths) >= block_rows or len(buf) >= block_bytes:
                _put(out, (buf, lengths), stop)
                buf, lengths = bytearray(), []
        if stop.is_set():  # the consumer gave up; it closes the connection
            return
        if lengths:
            _put(out, (buf, lengths), stop)
        result = pgconn.get_result()
        while pgconn.get_result() is not None:
            pass
        if result is not None and result.status != pq.ExecStatus.COMMAND_OK:
            raise _error(result)
        _put(out, _DONE, stop)
    except BaseException as exc:  # handed to the consumer, which re-raises it
        _put(out, exc, stop)


def _put(out: queue.Queue, item, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            out.put(item, timeout=0.1)
            return
        except queue.Full:
            continue


def copy_blocks(pgconn, statement: bytes, block_rows: int, block_bytes: int) -> Iterator[Block]:
    """Run ``COPY (...) TO STDOUT (FORMAT binary)`` and yield its rows in blocks (header/trailer removed).

    If the consumer stops early the connection is left mid-COPY: the caller must close it.

    Raises:
        CopyFailed: the server reported an error.
    """
    pgconn.send_query(statement)
    result = pgconn.get_result()
    if result is None or result.status != pq.ExecStatus.COPY_OUT:
        error = _error(result) if result is not None else CopyFailed("no result for COPY", None)
        while pgconn.get_result() is not None:
            pass
        raise error
    out: queue.Queue = queue.Queue(maxsize=QUEUE_BLOCKS)
    stop = threading.Event()
    thread = threading.Thread(target=_receive, args=(pgconn, block_rows, block_bytes, out, stop),
                              name="dbmazz-pg-copy", daemon=True)
    thread.start()
    try:
        while (item := out.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)
