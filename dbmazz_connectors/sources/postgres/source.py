"""The PostgreSQL source: a pgoutput logical slot read through the SQL interface, one decode pass per range,
or (``capture_mode: stream``) through one replication stream kept open across ranges."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql

from ...core.batch import ChangeEvent, Rows
from ...core.errors import (
    ConfigError,
    DbmazzError,
    Problem,
    SlotInvalidatedError,
    SourceError,
    TableChangedError,
    TransientError,
    redact,
)
from ...core.schema import TableSchema
from ...core.snapshot import FULL_RANGE, KeyRange, SnapshotChunk
from ._catalog import Catalog
from ._reader import CopyFailed, copy_blocks
from ._stream import ReplicationStream, SlotInUse, gap_after
from .config import PostgresSourceConfig
from .decoder import PgOutputDecoder, in_order
from .position import Lsn
from .preflight import omitted_columns, run_preflight, slot_state
from .setup import run_setup
from .snapshot import SnapshotReader, plan_chunks

__all__ = ["PostgresSource"]

# Decoded chunks kept ahead of the consumer, per decode thread: while the change log writes a
# Parquet part (the consumer's slow step) reading and decoding go on.
DEPTH = 3

# Output functions run in the decoding session: these make the text forms _convert.py expects.
# How long a stream waits for the slot to be released (by the walsender of a process that just stopped or died).
SLOT_WAIT_SECONDS = 15.0
# How long an acknowledgement through the stream may take to show in pg_replication_slots.
ACK_WAIT_SECONDS = 10.0

_SESSION = (
    "SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'iso_8601'; SET TimeZone = 'UTC'; "
    "SET extra_float_digits = 3; SET bytea_output = 'hex'"
)


class PostgresSource:
    """Captures the configured tables of one database through one logical slot (plugin pgoutput).

    Reading peeks at the slot (``pg_logical_slot_peek_binary_changes``) and never moves it;
    ``checkpoint`` moves it (``pg_replication_slot_advance``), called by the engine only once a
    batch is durable in the change log.

    With ``capture_mode: stream`` reading goes through a ``START_REPLICATION`` stream opened by the
    first read and kept open by this object (``_stream.py``); ``checkpoint`` then acknowledges through
    the stream (a standby status update) and waits until the slot shows it. ``disconnect`` closes it.
    """

    name = "postgres"

    def __init__(self, config: PostgresSourceConfig) -> None:
        self.config = config
        self._conn: psycopg.Connection | None = None
        self._stream: psycopg.Connection | None = None
        self._replication: ReplicationStream | None = None
        self._catalog: Catalog | None = None

    @classmethod
    def from_config(cls, mapping: Mapping[str, Any]) -> PostgresSource:
        return cls(PostgresSourceConfig.from_mapping(mapping))

    def __repr__(self) -> str:
        c = self.config
        return f"PostgresSource({c.user}@{c.host}:{c.port}/{c.dbname}, slot={c.slot})"

    # connections
    def _open(self, **extra: Any) -> psycopg.Connection:
        try:
            return psycopg.connect(**self.config.connect_kwargs(), autocommit=True, **extra)
        except psycopg.OperationalError as exc:
            text = redact(str(exc).strip())
            if "password authentication failed" in text or "does not exist" in text:
                raise ConfigError(
                    f"cannot connect to postgres as {self.config.user}: {text}",
                    hint="check the url, user, password and database",
                ) from None
            if _NEEDS_TLS.search(text):
                raise ConfigError(
                    f"postgres at {self.config.host}:{self.config.port} refused a connection without "
                    f"TLS: {text}",
                    hint="set sslmode: verify-full and sslrootcert: /path/to/ca.pem "
                    "in the source (or in the url's query)",
                ) from None
            if _TLS_FAILURE.search(text):
                raise ConfigError(
                    f"cannot connect to postgres at {self.config.host}:{self.config.port} over TLS: {text}",
                    hint="check sslrootcert (the CA that signed the server's certificate) and that the "
                    "host in the url is a name the certificate carries (sslmode=verify-full)",
                ) from None
            raise TransientError(
                f"cannot connect to postgres at {self.config.host}:{self.config.port}: {text}"
            ) from None

    def connect(self) -> None:
        if self._conn is None:
            self._conn = self._open()
            self._catalog = Catalog(self._conn, self.config.selection)

    @property
    def conn(self) -> psycopg.Connection:
        if self._conn is None:
            raise SourceError("the postgres source is not connected", hint="call connect() first")
        return self._conn

    @property
    def catalog(self) -> Catalog:
        self.conn  # noqa: B018 - raises when not connected
        assert self._catalog is not None
        return self._catalog

    def disconnect(self) -> None:
        self._close_replication()
        for conn in (self._stream, self._conn):
            if conn is not None:
                conn.close()
        self._conn = self._stream = self._catalog = None

    # checks and setup
    def preflight(self) -> list[Problem]:
        return run_preflight(self.conn, self.config, self.catalog)

    def setup(self) -> None:
        run_setup(self.conn, self.config, self.catalog)

    def omitted_columns(self) -> list[str]:
        """Each column of the configured tables that does not reach the sinks as it is (excluded, generated,
        carried as text), and why: one line per column, for ``dbmazz check`` to show beside "ok"."""
        return omitted_columns(self.config, self.catalog)

    def table_schemas(self) -> dict[str, TableSchema]:
        schemas = {}
        with self._errors():  # a server restarting (57P01) mid-capture: a TransientError, like the reads
            for qualified in self.config.tables:
                info = self.catalog.table(qualified)
                if info is None:
                    raise SourceError(f"expected table {qualified} to exist, found none")
                schemas[qualified] = self.catalog.schema_of(info)
        return schemas

    # positions
    def current_position(self) -> Lsn:
        """Everything committed so far (the WAL insert position)."""
        with self._errors():
            return Lsn.parse(self.conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()[0])

    def checkpoint_position(self) -> Lsn | None:
        with self._errors():
            state = slot_state(self.conn, self.config.slot)
        return Lsn.parse(state[3]) if state and state[3] else None

    def _live_slot(self) -> Lsn:
        with self._errors():
            state = slot_state(self.conn, self.config.slot)
        if state is None:
            raise SourceError(
                f"expected replication slot {self.config.slot!r} to exist, found none",
                hint="run setup (dbmazz check shows what is missing)",
            )
        if state[2] == "lost":
            raise SlotInvalidatedError(self.config.slot, "wal_status = lost")
        return Lsn.parse(state[3])

    def checkpoint(self, position: Lsn) -> None:
        """Advance the slot to ``position``; a no-op at or before its confirmed position.

        While a stream holds the slot (``pg_replication_slot_advance`` fails on an active slot) the
        position is acknowledged through the stream, and this returns once the slot shows it.
        """
        confirmed = self._live_slot()
        if position <= confirmed:
            return
        if self._replication is not None:
            try:
                with self._errors():
                    self._acknowledge(self._replication, position)
                return
            except TransientError:
                self._close_replication()  # the stream is gone: the slot is free for the SQL function below
        with self._errors():
            self.conn.execute(
                "SELECT pg_replication_slot_advance(%s, %s::pg_lsn)", (self.config.slot, str(position))
            )

    def pending_changes(self, start: Lsn, end: Lsn) -> bool:
        """A bounded look: does the slot hold a change of the published tables up to ``end``?

        Decodes at most up to the first transaction with output (``upto_nchanges = 1``), so an idle
        pipeline on a busy server can be acknowledged without a capture run. Conservative: a
        transaction at or before ``start`` still counts (the capture then just advances the slot).
        """
        self._live_slot()
        if self.config.capture_mode == "stream":
            with self._errors():
                return self._stream_at(start).has_changes(
                    end.value, self.config.read_block_bytes, self.config.read_block_rows
                )
        upto = self._flushed_upto(end)
        if upto < end:
            return True  # WAL up to ``end`` is not flushed yet: nothing can be said about it
        query = sql.SQL(
            "SELECT count(*) FROM pg_logical_slot_peek_binary_changes({}, {}::pg_lsn, 1, 'proto_version', '1', "
            "'publication_names', {}) WHERE get_byte(data, 0) IN (73, 85, 68, 84)"  # I, U, D, T
        ).format(sql.Literal(self.config.slot), sql.Literal(str(upto)), sql.Literal(self.config.publication))
        with self._errors():
            return self.conn.execute(query).fetchone()[0] > 0

    def row_count(self, table: str) -> int:
        schema, name = table.split(".", 1)
        query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, name))
        with self._errors():
            return int(self.conn.execute(query).fetchone()[0])

    # reading
    def _flushed_upto(self, end: Lsn) -> Lsn:
        """Wait (briefly) until the WAL is flushed to ``end``: decoding reads flushed WAL only."""
        deadline = time.monotonic() + self.config.flush_wait_seconds
        while True:
            with self._errors():
                flushed = Lsn.parse(
                    self.conn.execute("SELECT pg_current_wal_flush_lsn()::text").fetchone()[0]
                )
            if flushed >= end or time.monotonic() >= deadline:
                return min(flushed, end)
            time.sleep(0.02)

    def read_changes(self, start: Lsn, end: Lsn) -> Iterator[ChangeEvent]:
        """Yield the changes of (start, end] in commit order, in row chunks; last a Heartbeat.

        Repeatable until ``checkpoint``; memory is bounded by ``read_block_rows``/``read_block_bytes``
        whatever the size of the range or of a single transaction.
        """
        self._live_slot()
        self._check_published()
        if self.config.capture_mode == "stream":
            yield from self._read_stream(start, end)
            return
        upto = self._flushed_upto(end)
        wanted = frozenset(self.config.tables)
        with ThreadPoolExecutor(self.config.decode_threads, thread_name_prefix="dbmazz-pg-decode") as pool:
            decoder = PgOutputDecoder(
                start, end, lambda message: self.catalog.relation(message, wanted), pool
            )
            if upto > start:
                yield from in_order(self._decode(decoder, upto), depth=self.config.decode_threads * DEPTH)
        yield decoder.finish(upto)

    def _stream_conn(self) -> psycopg.Connection:
        if self._stream is None or self._stream.closed:
            self._stream = self._open()
            self._stream.execute(_SESSION)
        return self._stream

    def _decode(self, decoder: PgOutputDecoder, upto: Lsn) -> Iterator[ChangeEvent]:
        c = self.config
        conn = self._stream_conn()
        statement = (
            sql.SQL(
                "COPY (SELECT data FROM pg_logical_slot_peek_binary_changes({}, {}::pg_lsn, NULL, 'proto_version', '1', "
                "'publication_names', {})) TO STDOUT (FORMAT binary)"
            )
            .format(sql.Literal(c.slot), sql.Literal(str(upto)), sql.Literal(c.publication))
            .as_bytes(conn)
        )
        finished = False
        try:
            with self._errors():
                for buf, lengths in copy_blocks(
                    conn.pgconn, statement, c.read_block_rows, c.read_block_bytes
                ):
                    yield from decoder.feed(buf, lengths)
            finished = True
        finally:
            if not finished:  # abandoned or failed mid-COPY: the connection cannot be reused
                conn.close()
                self._stream = None

    # the streaming mode (README, "Capture modes")
    def _read_stream(self, start: Lsn, end: Lsn) -> Iterator[ChangeEvent]:
        """As ``read_changes``, from the stream: the transactions committed in (start, end], then a Heartbeat.

        A failure, or a consumer that stops half-way, closes the stream: the next read starts it again
        from the slot's confirmed position.
        """
        c = self.config
        with self._errors():
            stream = self._stream_at(start)
        wanted = frozenset(c.tables)
        finished = False
        try:
            with ThreadPoolExecutor(c.decode_threads, thread_name_prefix="dbmazz-pg-decode") as pool:
                decoder = PgOutputDecoder(
                    start,
                    end,
                    lambda message: self.catalog.relation(message, wanted),
                    pool,
                    relations=stream.relations,
                )
                with self._errors():
                    yield from in_order(
                        self._stream_events(stream, decoder, end), depth=c.decode_threads * DEPTH
                    )
            heartbeat = decoder.finish()
            stream.position = max(stream.position, heartbeat.position.value)
            finished = True
        finally:
            if not finished:
                self._close_replication()
        yield heartbeat

    def _stream_events(
        self, stream: ReplicationStream, decoder: PgOutputDecoder, end: Lsn
    ) -> Iterator[ChangeEvent]:
        for buf, lengths in stream.blocks(
            end.value, self.config.read_block_rows, self.config.read_block_bytes
        ):
            yield from decoder.feed(buf, lengths)

    def _stream_at(self, start: Lsn) -> ReplicationStream:
        """The open stream if it can deliver (start, ...]: it has handed out nothing past ``start``; else a new one
        from the slot's confirmed position (a re-read after a failed batch, a connection the server closed)."""
        stream = self._replication
        if stream is not None and (start.value < stream.position or not stream.alive()):
            self._close_replication()
            stream = None
        if stream is None:
            stream = self._replication = self._start_replication(self._live_slot())
        return stream

    def _start_replication(self, confirmed: Lsn) -> ReplicationStream:
        block_size, segment_size = self.conn.execute(
            "SELECT current_setting('wal_block_size')::int, "
            "(SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size')"
        ).fetchone()
        deadline = time.monotonic() + SLOT_WAIT_SECONDS
        while True:
            conn = self._open(replication="database")
            try:
                result = conn.pgconn.exec_(_SESSION.encode())
                if result.status != psycopg.pq.ExecStatus.COMMAND_OK:
                    raise CopyFailed((result.error_message or b"").decode(errors="replace").strip(), None)
                return ReplicationStream.open(
                    conn,
                    self.config.slot,
                    self.config.publication,
                    confirmed.value,
                    gap_after(block_size, segment_size),
                    self.config.read_block_bytes,
                    self.config.read_block_rows,
                )
            except SlotInUse as exc:
                conn.close()
                if time.monotonic() >= deadline:
                    raise TransientError(
                        f"postgres: {redact(exc.message).splitlines()[0]}",
                        hint="another capture of this pipeline holds the slot; run one at a time "
                        "(a capture that just stopped frees it within seconds)",
                    ) from None
                time.sleep(0.1)
            except BaseException:
                conn.close()
                raise

    def _acknowledge(self, stream: ReplicationStream, position: Lsn) -> None:
        """Acknowledge ``position`` through the stream; wait until the slot's confirmed_flush_lsn shows it."""
        stream.acknowledge(position.value)
        deadline = time.monotonic() + ACK_WAIT_SECONDS
        asked = time.monotonic()
        while True:
            state = slot_state(self.conn, self.config.slot)
            if state and state[3] and Lsn.parse(state[3]) >= position:
                return
            if time.monotonic() >= deadline:
                raise TransientError(
                    f"postgres did not confirm {position} on slot {self.config.slot!r} within "
                    f"{ACK_WAIT_SECONDS:.0f} s of the acknowledgement"
                )
            if time.monotonic() - asked > 0.5:
                stream.acknowledge(position.value)
                asked = time.monotonic()
            time.sleep(0.005)

    def _close_replication(self) -> None:
        """Close the stream, then wait (briefly) until its walsender has released the slot."""
        stream, self._replication = self._replication, None
        if stream is None:
            return
        stream.close()
        if self._conn is None:
            return
        deadline = time.monotonic() + SLOT_WAIT_SECONDS
        try:
            while time.monotonic() < deadline:
                row = self._conn.execute(
                    "SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s", (self.config.slot,)
                ).fetchone()
                if row is None or row[0] != stream.backend_pid:
                    return
                time.sleep(0.01)
        except psycopg.Error:
            pass  # the server is gone too: nothing holds the slot once it is back

    # table identity (a table dropped and re-created must not be captured as silent zero rows)
    def table_identities(self) -> dict[str, str | None]:
        """Each configured table's relation id now (None: the table does not exist), and its replicated columns
        that have a default.

        ``ADD COLUMN ... DEFAULT`` fills the rows that existed before it in the source without a change in the
        WAL: a column with a default that appears changes the identity, so capture stops and asks for a re-sync
        of the table, which copies the filled values. (Defaults survive table rewrites, unlike
        ``pg_attribute.atthasmissing``: a VACUUM FULL changes nothing here. ``SET``/``DROP DEFAULT`` on an
        existing column does, and costs a re-sync that was not strictly needed.)
        """
        identities: dict[str, str | None] = {}
        for qualified in self.config.tables:
            info = self.catalog.table(qualified)
            if info is None:
                identities[qualified] = None
                continue
            excluded = self.config.selection(qualified).exclude
            defaulted = [c for c in info.defaulted if c not in excluded]
            identities[qualified] = f"oid {info.oid}" + (
                f"; columns with a default: {', '.join(defaulted)}" if defaulted else ""
            )
        return identities

    def _check_published(self) -> None:
        """Every configured table must be in the publication: a table dropped and re-created (or removed from
        the publication) is not, and its changes would silently not be decoded."""
        with self._errors():
            published = {
                r[0]
                for r in self.conn.execute(
                    "SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = %s",
                    (self.config.publication,),
                )
            }
            via_root = self.conn.execute(
                "SELECT pubviaroot FROM pg_publication WHERE pubname = %s", (self.config.publication,)
            ).fetchone()
        for table in self.config.tables:
            if (
                via_root == (False,) and getattr(self.catalog.table(table), "kind", "") == "p"
            ):  # as partitions'
                fix = (
                    sql.SQL("ALTER PUBLICATION {} SET (publish_via_partition_root = true)")
                    .format(sql.Identifier(self.config.publication))
                    .as_string(self.conn)
                )
                raise SourceError(
                    f"expected publication {self.config.publication} to publish partitioned table "
                    f"{table} via its root, it publishes its partitions (their changes are not the "
                    "root's)",
                    hint=f"as the publication's owner: {fix}; then re-sync the table (changes "
                    "made meanwhile were published as the partitions')",
                )
            if table not in published:
                schema, name = table.split(".", 1)
                add = (
                    sql.SQL("ALTER PUBLICATION {} ADD TABLE {}")
                    .format(sql.Identifier(self.config.publication), sql.Identifier(schema, name))
                    .as_string(self.conn)
                )
                raise TableChangedError(
                    table,
                    f"is not in publication {self.config.publication} (dropped and re-created, or removed "
                    "from it)",
                    f"run setup again (it runs: {add}), then re-sync the table",
                )

    # snapshots (docs/architecture.md, "Snapshots")
    def snapshot_floor(self) -> Lsn:
        """The WAL insert position now: every snapshot slot created later has its consistent point after it."""
        return self.current_position()

    def plan_chunks(self, table: str, chunk_rows: int, key_range: KeyRange = FULL_RANGE) -> list[KeyRange]:
        schema = self.table_schemas()[table] if table in self.config.tables else None
        if schema is None:
            raise SourceError(
                f"expected a table of this pipeline, got {table}",
                hint=f"the pipeline replicates {', '.join(self.config.tables)}",
            )
        schema.require_primary_key()
        with self._errors():
            return plan_chunks(self.conn, schema, chunk_rows, key_range)

    def read_snapshot(self, chunks: Sequence[SnapshotChunk], parallelism: int) -> Iterator[Rows]:
        """Read the chunks through one exported snapshot (a temporary slot's), ``parallelism`` connections at once."""
        schemas = self.table_schemas()
        for table in {c.table for c in chunks}:
            schemas[table].require_primary_key()
        reader = SnapshotReader(
            lambda: self._open(),
            _SESSION,
            schemas,
            self.config.read_block_rows,
            self.config.read_block_bytes,
            self.config.connect_kwargs(),
        )
        with self._errors():
            yield from reader.read(chunks, parallelism)

    def _errors(self):
        return _translate_errors(self.config.slot, self._slot_lost)

    def _slot_lost(self) -> bool:
        """Whether the server marks the slot invalidated (``wal_status = lost``), asked on a connection of its own
        (the failed one may be mid-COPY): an error's text is never what decides."""
        try:
            with self._open() as conn:
                state = slot_state(conn, self.config.slot)
        except (DbmazzError, psycopg.Error):
            return False
        return bool(state and state[2] == "lost")


_NOT_IN_PREREQUISITE_STATE = "55000"
# a TLS handshake or verification failure (libpq's words): a configuration problem, not worth retrying
_TLS_FAILURE = re.compile(r"certificate|does not support SSL")
_NEEDS_TLS = re.compile(r"pg_hba\.conf (rejects connection|entry) for .* no encryption")


class _translate_errors:  # noqa: N801 - used as a context manager, reads like a function
    """Map driver errors to dbmazz errors (slot invalidated, connection lost), passwords redacted."""

    def __init__(self, slot: str, slot_lost: Callable[[], bool]) -> None:
        self.slot = slot
        self.slot_lost = slot_lost

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, exc, tb) -> bool:
        if exc is None or not isinstance(exc, psycopg.Error | CopyFailed):
            return False
        text = redact(str(exc).strip())
        sqlstate = getattr(exc, "sqlstate", None)
        # object_not_in_prerequisite_state: among others, a slot the server invalidated; the slot's state decides
        if sqlstate == _NOT_IN_PREREQUISITE_STATE and self.slot_lost():
            raise SlotInvalidatedError(self.slot, text.splitlines()[0]) from None
        if isinstance(exc, pg_errors.UndefinedObject) or sqlstate == "42704":
            raise SourceError(
                f"postgres: {text}", hint="run setup (dbmazz check shows what is missing)"
            ) from None
        lost_link = sqlstate is None and isinstance(
            exc, psycopg.OperationalError | CopyFailed
        )  # no server error
        if lost_link or (sqlstate or "").startswith(("08", "57P0")):  # connection exceptions, shutdowns
            raise TransientError(f"postgres connection failed while capturing: {text}") from None
        if sqlstate is not None and _transient(sqlstate):
            raise TransientError(f"postgres failed while capturing (a re-run can succeed): {text}") from None
        raise SourceError(f"postgres failed while capturing: {text}") from None


def _transient(sqlstate: str) -> bool:
    """Server errors a re-run can get past: connection exceptions (08), insufficient resources (53), a slot in
    use by another session (55006), operator intervention such as a shutdown or a cancel (57), serialization
    failures and deadlocks (40001, 40P01)."""
    return sqlstate[:2] in ("08", "53", "57") or sqlstate in ("55006", "40001", "40P01")
