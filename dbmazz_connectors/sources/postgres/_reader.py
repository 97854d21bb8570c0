"""Receive a binary COPY stream in blocks of rows, on a thread, so receiving overlaps decoding.

pgoutput sends one COPY row per change, so the per-row cost of receiving matters. Two
receivers fill the same blocks, handed over through a small bounded queue (memory stays
bounded: at most ``QUEUE_BLOCKS`` blocks wait):

- the native one (``_copyrecv.c``, built at install): one call per block, without the GIL, so
  the decoding threads run meanwhile. It calls the libpq psycopg loaded, found and checked by
  ``_libpq_functions``.
- the Python one: rows straight from ``PGconn.get_copy_data`` (about 1 µs a row, holding the
  GIL). Used where the extension is not built, where the libpq cannot be found, or with
  ``DBMAZZ_PG_RECEIVER=python``.
"""

from __future__ import annotations

import ctypes
import functools
import os
import queue
import select
import threading
import time
from collections.abc import Iterator, Sequence

import numpy as np
from psycopg import pq

from .decoder import COPY_SIGNATURE

try:
    from . import _copyrecv
except ImportError:  # not built (no C compiler at install): the Python receiver is used
    _copyrecv = None

__all__ = ["copy_blocks", "CopyFailed", "Block", "receiver_for"]

QUEUE_BLOCKS = 2
YIELD_EVERY = 255  # rows between GIL hand-overs to the decoding threads (a mask: 2^k - 1)
_HEADER = len(COPY_SIGNATURE) + 8  # signature, int32 flags, int32 header-extension length
_DONE = object()

POLL_MS = 1000  # the native receiver returns this often while idle, so a stop is noticed
BLOCK_SLACK = 64  # bytes allocated past a block's rows (native receiver), for the padding a decoder appends

# A block: the rows concatenated (each still with its 6-byte COPY row header), and each row's length.
Block = tuple[bytearray, Sequence[int]]


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
    extension = int.from_bytes(row[len(COPY_SIGNATURE) + 4 : _HEADER], "big")
    return row[_HEADER + extension :]


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
        _finish(pgconn, out, stop)
    except BaseException as exc:  # handed to the consumer, which re-raises it
        _put(out, exc, stop)


def _put(out: queue.Queue, item, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            out.put(item, timeout=0.1)
            return
        except queue.Full:
            continue


@functools.cache
def _libpq_candidates() -> tuple[ctypes.CDLL, ...]:
    """The libpq libraries loaded in this process (psycopg's among them)."""
    if pq.__impl__ == "python":
        from psycopg.pq import _pq_ctypes

        return (_pq_ctypes.pq,)
    paths = []
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.rsplit(None, 1)[-1]
                if "/libpq" in path and ".so" in path and path not in paths:
                    paths.append(path)
    except OSError:
        return ()
    libs = []
    for path in paths:
        try:
            libs.append(ctypes.CDLL(path, mode=os.RTLD_NOLOAD | os.RTLD_LAZY))
        except OSError:
            continue
    return tuple(libs)


def _libpq_functions(pgconn) -> tuple[int, int, int, int] | None:
    """Addresses of PQgetCopyData, PQfreemem, PQconsumeInput and PQsocket of the libpq that owns
    ``pgconn``, or None. A library counts as the owner only if it reads the connection's socket,
    backend pid and server version exactly as psycopg does."""
    ptr = pgconn.pgconn_ptr
    if not ptr:
        return None
    for lib in _libpq_candidates():
        try:
            # lib[name] is a fresh function object: psycopg's own declarations (python impl) stay as they are
            socket, pid, version = lib["PQsocket"], lib["PQbackendPID"], lib["PQserverVersion"]
            for fn in (socket, pid, version):
                fn.argtypes, fn.restype = [ctypes.c_void_p], ctypes.c_int
            if (socket(ptr), pid(ptr), version(ptr)) != (
                pgconn.socket,
                pgconn.backend_pid,
                pgconn.server_version,
            ):
                continue
            return tuple(
                ctypes.cast(lib[name], ctypes.c_void_p).value
                for name in ("PQgetCopyData", "PQfreemem", "PQconsumeInput", "PQsocket")
            )
        except (AttributeError, OSError):
            continue
    return None


def _native_functions(pgconn) -> tuple[int, int, int, int] | None:
    """The libpq functions for the native receiver, or None where the Python receiver is used."""
    if _copyrecv is None or os.environ.get("DBMAZZ_PG_RECEIVER", "").lower() == "python":
        return None
    return _libpq_functions(pgconn)


def receiver_for(pgconn) -> str:
    """Which receiver ``copy_blocks`` uses on this connection: ``"native"`` or ``"python"``."""
    return "python" if _native_functions(pgconn) is None else "native"


def _receive_native(
    functions: tuple[int, int, int, int],
    pgconn,
    block_rows: int,
    block_bytes: int,
    out: queue.Queue,
    stop: threading.Event,
) -> None:
    """As ``_receive``, a block per call of the C loop (which releases the GIL).

    The C loop fills one receive buffer, reused for every block of the COPY; each block handed
    over is a copy of its used part. A fresh ``block_bytes`` bytearray per block would cost more
    than the copy: it is zero-filled, and at 32 MiB glibc maps it anew each time (a page fault
    per 4 KiB), while the right-sized copies reuse freed heap memory.
    """
    try:
        conn, receive = pgconn.pgconn_ptr, _copyrecv.receive
        header_done, pending, status = False, None, 0
        buf = np.empty(block_bytes, np.uint8)
        while status != 1:
            if pending is not None and len(pending) > len(buf):
                buf = np.empty(len(pending), np.uint8)
            lengths = np.empty(block_rows, np.int64)
            used = nrows = 0
            if pending is not None:  # the row that did not fit in the last block
                buf[: len(pending)] = np.frombuffer(pending, np.uint8)
                used, nrows, lengths[0], pending = len(pending), 1, len(pending), None
            while True:
                status, used, nrows, header_done, pending = receive(
                    conn, *functions, buf, used, lengths, nrows, header_done, POLL_MS
                )
                if status != 2:
                    break
                if stop.is_set():
                    return
            if status == -2:
                raise CopyFailed("expected a binary COPY stream from postgres, got something else", None)
            if status == -1:
                break
            if nrows:
                block = bytearray(buf[: used + BLOCK_SLACK])
                del block[used:]  # the slack stays allocated: a consumer's padding needs no realloc
                _put(out, (block, lengths[:nrows]), stop)
            if stop.is_set():
                return  # the consumer gave up; it closes the connection
        _finish(pgconn, out, stop)
    except BaseException as exc:  # handed to the consumer, which re-raises it
        _put(out, exc, stop)


def _finish(pgconn, out: queue.Queue, stop: threading.Event) -> None:
    """After the last row: the COPY command's result, then the end marker (or its error)."""
    result = pgconn.get_result()
    while pgconn.get_result() is not None:
        pass
    if result is None:
        message = (pgconn.error_message or b"").decode(errors="replace").strip()
        raise CopyFailed(message or "the COPY ended without a result", None)
    if result.status != pq.ExecStatus.COMMAND_OK:
        raise _error(result)
    _put(out, _DONE, stop)


def copy_blocks(pgconn, statement: bytes, block_rows: int, block_bytes: int) -> Iterator[Block]:
    """Run ``COPY (...) TO STDOUT (FORMAT binary)`` and yield its rows in blocks (header/trailer removed).

    If the consumer stops early the connection is left mid-COPY: the caller must close it.

    Raises:
        CopyFailed: the server reported an error.
    """
    functions = _native_functions(pgconn)
    receive = _receive if functions is None else functools.partial(_receive_native, functions)
    pgconn.send_query(statement)
    result = pgconn.get_result()
    if result is None or result.status != pq.ExecStatus.COPY_OUT:
        error = _error(result) if result is not None else CopyFailed("no result for COPY", None)
        while pgconn.get_result() is not None:
            pass
        raise error
    out: queue.Queue = queue.Queue(maxsize=QUEUE_BLOCKS)
    stop = threading.Event()
    thread = threading.Thread(
        target=receive, args=(pgconn, block_rows, block_bytes, out, stop), name="dbmazz-pg-copy", daemon=True
    )
    thread.start()
    try:
        while (item := out.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)
