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
import time
from collections.abc import Iterator

from psycopg import pq

from .decoder import COPY_SIGNATURE

__all__ = ["copy_blocks", "CopyFailed", "Block"]

QUEUE_BLOCKS = 2
YIELD_EVERY = 255  # rows between GIL hand-overs to the decoding threads (a mask: 2^k - 1)
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


def _next_row(pgconn) -> tuple[int, memoryview | None]:
    """One COPY row, waiting on the socket (select releases the GIL); (-1, None) at the end."""
    while True:
        nbytes, row = pgconn.get_copy_data(1)
        if nbytes:
            return nbytes, row
        select.select([pgconn.socket], [], [], 1.0)
        pgconn.consume_input()


def _receive(pgconn, block_rows: int, block_bytes: int, out: queue.Queue, stop: threading.Event) -> None:
    """Drain the COPY into blocks.

    Rows are copied into one bytearray at once so libpq reuses its buffers. The non-blocking
    read keeps the GIL while rows are buffered; every ``YIELD_EVERY + 1`` rows the loop hands
    the GIL over (and checks for a stop and for a full block), so decoding threads need not wait
    for the interpreter's 5 ms switch interval. The loop is kept this small on purpose: it runs
    once per change.
    """
    try:
        nbytes, first = _next_row(pgconn)
        buf, lengths = bytearray(), []
        if nbytes > 0:
            first = _strip_header(first)
            if len(first) > 2:
                buf += first
                lengths.append(len(first))
        append, get = lengths.append, pgconn.get_copy_data
        while nbytes >= 0:
            nbytes, row = get(1)
            if nbytes > 2:  # 2 bytes is the trailer; a row has at least 7
                buf += row
                append(nbytes)
                if not len(lengths) & YIELD_EVERY:
                    if stop.is_set():
                        return  # the consumer gave up; it closes the connection
                    time.sleep(0)
                    if len(lengths) >= block_rows or len(buf) >= block_bytes:
                        _put(out, (buf, lengths), stop)
                        buf, lengths = bytearray(), []
                        append = lengths.append
            elif nbytes == 0:
                select.select([pgconn.socket], [], [], 1.0)
                pgconn.consume_input()
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
