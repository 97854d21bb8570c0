"""The streaming capture mode: one ``START_REPLICATION`` stream of the slot, kept open across reads.

``pg_logical_slot_peek_binary_changes`` starts a new decoding session on every call, at the slot's
``restart_lsn``; a transaction held open pins ``restart_lsn``, so every read decodes again all WAL
written since that transaction began. A replication stream decodes the WAL once: the walsender keeps
its decoding state between reads, and the source reads the stream batch by batch.

Messages (PostgreSQL's "Streaming Replication Protocol"), inside CopyBoth ``CopyData``:

- ``w`` XLogData: int64 walStart, int64 walEnd, int64 clock, then one pgoutput message;
- ``k`` primary keepalive: int64 walEnd (every change the walsender decoded before it was sent
  before it), int64 clock, byte reply-requested;
- ``r`` standby status update (sent): int64 write, flush, apply, clock, byte reply-requested. The
  walsender moves the slot's ``confirmed_flush_lsn`` to flush (never sent lower than the slot's:
  older servers would move it back). Only an acknowledgement carries a flush position; the other
  updates carry flush 0 (none) and write = the last walEnd received, which is what a walsender
  stopping for a server shutdown waits for (it exits once the client reports what it sent).

Between reads nobody reads the stream: a thread (``_keep_alive``) reads what arrives into the
look-ahead buffer (up to ``ahead_bytes``) and answers keepalives, so neither ``wal_sender_timeout``
nor a server's fast shutdown waits on an idle source. Past ``ahead_bytes`` it stops reading and
answering: the walsender then times out (``wal_sender_timeout``) and the next read starts a new stream.

A block for ``PgOutputDecoder.feed`` is the pgoutput messages back to back, each after 6 bytes where
a COPY row has its header (the decoder never reads them): the last 6 bytes of the XLogData header.
"""

from __future__ import annotations

import select
import threading
import time
from collections.abc import Callable, Iterator

import psycopg
from psycopg import pq

from ._reader import Block, CopyFailed

__all__ = ["ReplicationStream", "SlotInUse", "gap_after"]

_W, _K = ord("w"), ord("k")
_B, _C = ord("B"), ord("C")
_ROWS = frozenset(ord(c) for c in "IUDT")
_XLOG_HEADER = 25  # 'w', walStart, walEnd, clock
_SKIP = _XLOG_HEADER - 6  # the payload keeps 6 bytes before it, as a COPY row's header
_PG_EPOCH_S = 946_684_800  # 2000-01-01 in Unix seconds
IDLE_SECONDS = 0.2  # no message for this long while reading: ask the walsender where it is
KEEPER_SECONDS = 0.5  # between reads, the stream is read this often
STATUS_SECONDS = 10.0  # and a status update sent at least this often (wal_sender_timeout is 60 s by default)


class SlotInUse(CopyFailed):
    """``START_REPLICATION`` refused: another process (or the walsender of one that died) holds the slot."""


def gap_after(block_size: int, segment_size: int) -> Callable[[int, int], bool]:
    """``reached(wal_end, end)``: no WAL record can start in [wal_end, end).

    A keepalive's walEnd is the end of the last record decoded; a position from
    ``pg_current_wal_insert_lsn()`` at a page boundary points past the page header, where the next
    record starts. So walEnd at a page boundary reaches an ``end`` up to one page header (24 bytes,
    40 on a segment's first page) after it.
    """

    def reached(wal_end: int, end: int) -> bool:
        if wal_end >= end:
            return True
        if wal_end % block_size:
            return False
        return end - wal_end <= (40 if wal_end % segment_size == 0 else 24)

    return reached


def _now_us() -> int:
    return int((time.time() - _PG_EPOCH_S) * 1_000_000)


def _u64(data, pos: int) -> int:
    return int.from_bytes(data[pos : pos + 8], "big")


class ReplicationStream:
    """A CopyBoth stream of pgoutput messages from one slot (a replication connection of its own).

    ``position``: every transaction whose commit LSN is below it has been read (and handed out);
    the messages read past it wait in a look-ahead buffer for the next read. ``acked``: the highest
    position sent as flushed (never sent lower: the walsender would move the slot back).
    """

    def __init__(
        self,
        conn: psycopg.Connection,
        start: int,
        reached: Callable[[int, int], bool],
        ahead_bytes: int = 32 * 1024 * 1024,
        ahead_rows: int = 100_000,
    ) -> None:
        self.conn = conn
        self.pgconn = conn.pgconn
        self.backend_pid = self.pgconn.backend_pid
        self.position = start
        self.acked = start
        self.received = start  # the highest walEnd of a keepalive
        self.relations: dict = {}  # relid -> RelationMessage, as the walsender sent them (once per session)
        self._reached = reached
        self._ahead: list = []  # messages read but not handed out, oldest first
        self._head = 0
        self._ahead_bytes = ahead_bytes
        self._ahead_rows = ahead_rows  # each message buffered costs a Python object too
        self._ended = False  # the server ended the stream while it was idle
        self._reading = False  # a read is under way: the keeper leaves the stream alone
        self._last_status = time.monotonic()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._keeper = threading.Thread(target=self._keep_alive, name="dbmazz-pg-stream-keeper", daemon=True)

    @classmethod
    def open(
        cls,
        conn: psycopg.Connection,
        slot: str,
        publication: str,
        start: int,
        reached: Callable[[int, int], bool],
        ahead_bytes: int = 32 * 1024 * 1024,
        ahead_rows: int = 100_000,
    ) -> ReplicationStream:
        """``START_REPLICATION`` on ``conn`` (a replication connection, session settings made) from ``start``."""
        quoted = '"' + publication.replace('"', '""') + '"'
        command = (
            f"START_REPLICATION SLOT {slot} LOGICAL {start >> 32:X}/{start & 0xFFFFFFFF:X} "
            f"(proto_version '1', publication_names '{quoted.replace(chr(39), chr(39) * 2)}')"
        )
        result = conn.pgconn.exec_(command.encode())
        if result.status != pq.ExecStatus.COPY_BOTH:
            message = (
                (result.error_message or conn.pgconn.error_message or b"").decode(errors="replace").strip()
            )
            code = result.error_field(pq.DiagnosticField.SQLSTATE)
            sqlstate = code.decode() if code else None
            raise (SlotInUse if sqlstate == "55006" else CopyFailed)(message, sqlstate)
        stream = cls(conn, start, reached, ahead_bytes, ahead_rows)
        stream._keeper.start()
        return stream

    @property
    def closed(self) -> bool:
        return self.conn.closed or self.pgconn.status != pq.ConnStatus.OK

    def alive(self) -> bool:
        """Whether the connection still stands (reads what has arrived; False if the server closed it)."""
        if self.closed or self._ended:
            return False
        try:
            with self._lock:
                self.pgconn.consume_input()
        except psycopg.OperationalError:
            return False
        return not self.closed

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            self.conn.close()
        if self._keeper.is_alive() and self._keeper is not threading.current_thread():
            self._keeper.join(timeout=2)

    # messages
    def _receive(self) -> memoryview | None:
        """The next message off the socket, or None after ``IDLE_SECONDS`` without one."""
        pgconn = self.pgconn
        deadline = time.monotonic() + IDLE_SECONDS
        while True:
            with self._lock:
                nbytes, data = pgconn.get_copy_data(1)
            if nbytes > 0:
                return data
            if nbytes == -1:  # the server ended the stream (shutting down)
                result = pgconn.get_result()
                while pgconn.get_result() is not None:
                    pass
                message = (result.error_message if result is not None else b"") or pgconn.error_message or b""
                code = result.error_field(pq.DiagnosticField.SQLSTATE) if result is not None else None
                raise CopyFailed(
                    "the server ended the replication stream"
                    + (f": {message.decode(errors='replace').strip()}" if message else " (shutting down?)"),
                    code.decode() if code else None,
                )
            if nbytes < -1:
                raise CopyFailed(
                    (pgconn.error_message or b"").decode(errors="replace").strip()
                    or "the replication stream failed",
                    None,
                )
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            select.select([pgconn.socket], [], [], left)
            with self._lock:
                pgconn.consume_input()

    def _next(self) -> memoryview | None:
        if self._head < len(self._ahead):
            data = self._ahead[self._head]
            self._head += 1
            if self._head == len(self._ahead):
                self._ahead.clear()
                self._head = 0
            return data
        return self._receive()

    def _unread(self, data) -> None:
        """Put back the message just taken by ``_next``."""
        if self._head > 0:
            self._head -= 1
        else:
            self._ahead.insert(0, data)

    def _look_ahead(self) -> Iterator[memoryview | None]:
        """The buffered messages, then new ones (buffered too): nothing is handed out."""
        index = self._head
        while True:
            if index < len(self._ahead):
                index += 1
                yield self._ahead[index - 1]
                continue
            data = self._receive()
            if data is not None:
                self._ahead.append(data)
                index += 1
            yield data

    def _status_message(self, flush: int, reply: bool) -> bytes:
        write = max(self.received, flush).to_bytes(8, "big")
        flushed = flush.to_bytes(8, "big")
        return (
            b"r"
            + write
            + flushed
            + flushed
            + _now_us().to_bytes(8, "big", signed=True)
            + (b"\x01" if reply else b"\x00")
        )

    def _send(self, message: bytes) -> None:
        self.pgconn.put_copy_data(message)
        self.pgconn.flush()
        self._last_status = time.monotonic()

    def status(self, reply: bool = False) -> None:
        """A standby status update without a flush position (write = the last walEnd received)."""
        with self._lock:
            self._send(self._status_message(0, reply))

    def acknowledge(self, position: int) -> None:
        """Tell the walsender every change up to ``position`` is durable (it moves the slot there)."""
        if position > self.acked:
            self.acked = position
        with self._lock:
            self._send(self._status_message(self.acked, True))

    def _keepalive(self, data) -> int:
        """Note a keepalive's walEnd (returned); answer it if it asks for a reply."""
        wal_end = _u64(data, 1)
        self.received = max(self.received, wal_end)
        if data[17]:
            self.status()
        return wal_end

    def _keep_alive(self) -> None:
        """Between reads: read what arrives into the look-ahead buffer and answer keepalives (see the module's doc)."""
        while not self._stop.wait(KEEPER_SECONDS):
            with self._lock:
                if self._reading or self._ended or self.closed:
                    continue
                try:
                    self._drain()
                except psycopg.Error:
                    self._ended = True  # the next read starts a new stream

    def _drain(self) -> None:
        """(Holding the lock, no read under way.) Buffer the messages that arrived, answer keepalives."""
        pgconn = self.pgconn
        pgconn.consume_input()
        buffered = sum(len(m) for m in self._ahead[self._head :])
        reply = False
        while buffered < self._ahead_bytes and len(self._ahead) - self._head < self._ahead_rows:
            nbytes, data = pgconn.get_copy_data(1)
            if nbytes == 0:
                break
            if nbytes < 0:
                self._ended = True
                return
            self._ahead.append(data)
            buffered += nbytes
            if data[0] == _K:
                self.received = max(self.received, _u64(data, 1))
                reply = reply or bool(data[17])
        if buffered >= self._ahead_bytes or len(self._ahead) - self._head >= self._ahead_rows:
            return  # full: neither read nor answer until the next read (the walsender may time out)
        if reply or time.monotonic() - self._last_status > STATUS_SECONDS:
            self._send(self._status_message(0, False))

    def _begin_read(self) -> None:
        with self._lock:
            self._reading = True

    def _end_read(self) -> None:
        self._reading = False

    # reading
    def blocks(self, end: int, block_rows: int, block_bytes: int) -> Iterator[Block]:
        """The messages of every transaction committed before ``end`` not yet handed out, in blocks.

        Stops at the first Begin whose commit LSN is at or past ``end`` (kept for the next read), or at a
        keepalive whose walEnd reaches ``end`` outside a transaction.
        """
        self._begin_read()
        try:
            yield from self._blocks(end, block_rows, block_bytes)
        finally:
            self._end_read()

    def _blocks(self, end: int, block_rows: int, block_bytes: int) -> Iterator[Block]:
        buf, lengths = bytearray(), []
        in_txn = False
        while True:
            data = self._next()
            if data is None:
                self.status(reply=True)  # idle: the reply says how far the walsender has decoded
                continue
            kind = data[0]
            if kind == _W:
                message = data[_XLOG_HEADER]
                if message == _B:
                    if _u64(data, _XLOG_HEADER + 1) >= end:
                        self._unread(data)
                        break
                    in_txn = True
                elif message == _C:
                    in_txn = False
                buf += data[_SKIP:]
                lengths.append(len(data) - _SKIP)
                if len(lengths) >= block_rows or len(buf) >= block_bytes:
                    yield buf, lengths
                    buf, lengths = bytearray(), []
            elif kind == _K:
                if self._reached(self._keepalive(data), end) and not in_txn:
                    break
        if lengths:
            yield buf, lengths

    def has_changes(self, end: int, limit_bytes: int, limit_rows: int) -> bool:
        """Whether a transaction committed before ``end`` and not yet handed out changes a published table.

        Reads ahead without handing anything out (the messages wait for the next read); conservative
        (True) once ``limit_bytes`` or ``limit_rows`` messages are buffered.
        """
        self._begin_read()
        try:
            return self._has_changes(end, limit_bytes, limit_rows)
        finally:
            self._end_read()

    def _has_changes(self, end: int, limit_bytes: int, limit_rows: int) -> bool:
        buffered, count, in_txn = 0, 0, False
        for data in self._look_ahead():
            if data is None:
                self.status(reply=True)
                continue
            buffered += len(data)
            count += 1
            if data[0] == _W:
                message = data[_XLOG_HEADER]
                if message == _B:
                    if _u64(data, _XLOG_HEADER + 1) >= end:
                        return False
                    in_txn = True
                elif message == _C:
                    in_txn = False
                elif message in _ROWS and in_txn:
                    return True
            elif data[0] == _K and self._reached(self._keepalive(data), end) and not in_txn:
                return False
            if buffered > limit_bytes or count > limit_rows:
                return True
        return True  # not reached: the look-ahead never ends
