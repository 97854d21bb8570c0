"""The MySQL/MariaDB binlog source: bounded, repeatable reads of row-based binlog ranges."""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pymysql
from pymysql import converters

from ...core.batch import ChangeEvent, Rows
from ...core.errors import (
    ConfigError,
    LogPurgedError,
    Problem,
    SourceError,
    TableChangedError,
    TransientError,
    caused_by,
    redact,
)
from ...core.schema import TableSchema
from ...core.snapshot import FULL_RANGE, KeyRange, SnapshotChunk
from ._keys import plan_key_ranges
from ._position import visible_end
from ._protocol import DumpError, E, Event, dump_events, query_text
from ._reader import RangeReader
from ._schema import load_table_info, schema_from_info
from .config import LOOKAHEAD_SERVER_ID_OFFSET, MySqlConfig
from .position import BinlogPosition
from .preflight import run_preflight
from .snapshot import SESSION_SQL, SnapshotReader, SnapshotTable, select_grant, translate

__all__ = ["MySqlSource"]

_PURGED = 1236  # ER_MASTER_FATAL_ERROR_READING_BINLOG: the requested file/position is not there
# CR_SERVER_GONE_ERROR, CR_SERVER_LOST, ER_CONNECTION_KILLED, CR_SERVER_LOST_EXTENDED: the server went away
_LOST = frozenset({2006, 2013, 1927, 2055})
# snapshot connections decode nothing: values stay text (binary as bytes) for the columnar decoder
_TEXT_CONVERSIONS = {k: v for k, v in converters.conversions.items() if not isinstance(k, int)}
_TRANSACTIONAL_ENGINES = ("innodb",)


class MySqlSource:
    """Captures row changes of ``config.tables`` from the binlog.

    MySQL has no replication slot: ``checkpoint_position`` is always None (the checkpoint lives
    in the change log / Dagster metadata) and ``checkpoint`` only remembers the position, so
    binlog retention (``binlog_expire_logs_seconds``) is the only thing keeping unread changes.
    """

    name = "mysql"

    def __init__(self, config: MySqlConfig) -> None:
        self.config = config
        self._conn: pymysql.Connection | None = None
        self.mariadb = False
        self.version = ""
        self._checksum = False
        self._acknowledged: BinlogPosition | None = None
        self._resync_floors: dict[str, int] = {}

    @classmethod
    def from_config(cls, mapping: Mapping[str, Any]) -> MySqlSource:
        return cls(MySqlConfig.from_mapping(mapping))

    # connections
    def _open(self, **options: Any) -> pymysql.Connection:
        where = f"{self.config.user}@{self.config.host}:{self.config.port}"
        try:
            conn = pymysql.connect(**self.config.connect_kwargs(), **options)
        except pymysql.err.OperationalError as exc:
            code = exc.args[0] if exc.args else None
            text = redact(str(exc.args[-1]))
            if code in (1045, 1044, 1049):
                plain = (
                    self.config.ssl_mode == "DISABLED"
                )  # MariaDB's require_secure_transport says "Access denied"
                raise ConfigError(
                    f"mysql refused {where}: {text}",
                    hint="check the url's user, password and "
                    "database"
                    + (
                        ", and TLS: a server with require_secure_transport = ON refuses a "
                        "connection without it (ssl_mode: VERIFY_IDENTITY, ssl_ca)"
                        if plain
                        else ""
                    ),
                ) from None
            if caused_by(exc, ssl.SSLError):  # the handshake or the certificate's verification failed
                raise ConfigError(
                    f"cannot connect to mysql at {where} over TLS: {text}",
                    hint="check ssl_ca (the CA that signed the server's certificate) and that the host "
                    "in the url is a name the certificate carries (ssl_mode VERIFY_IDENTITY)",
                ) from None
            if code == 2026 and "doesn't support" in text:  # pymysql >= 2: TLS required, none offered
                raise ConfigError(
                    f"mysql at {where} does not offer TLS (ssl_mode {self.config.ssl_mode})",
                    hint="configure ssl_cert/ssl_key on the server (have_ssl = YES), or set ssl_mode: "
                    "PREFERRED to connect in clear",
                ) from None
            if code == 3159 or "secure transport" in text:  # require_secure_transport, and no TLS asked for
                raise ConfigError(
                    f"mysql refused {where}: {text}",
                    hint="the server requires TLS: set ssl_mode: VERIFY_IDENTITY and ssl_ca",
                ) from None
            raise TransientError(f"cannot reach mysql at {where}: {text}") from None
        if self.config.tls_required and not isinstance(getattr(conn, "_sock", None), ssl.SSLSocket):
            conn.close()
            raise ConfigError(
                f"mysql at {where} does not offer TLS (ssl_mode {self.config.ssl_mode})",
                hint="configure ssl_cert/ssl_key on the server (have_ssl = YES), or set ssl_mode: "
                "PREFERRED to connect in clear",
            )
        return conn

    def connect(self) -> None:
        self._conn = self._open()
        version, checksum = self._query_one("SELECT VERSION(), @@global.binlog_checksum")
        self.version = str(version)
        self.mariadb = "mariadb" in self.version.lower()
        self._checksum = str(checksum).upper() != "NONE"

    @property
    def conn(self) -> pymysql.Connection:
        if self._conn is None:
            self.connect()
        assert self._conn is not None
        try:
            self._conn.ping(reconnect=False)
        except pymysql.err.MySQLError:
            self._conn = self._open()
        return self._conn

    @contextlib.contextmanager
    def _lost_connection(self) -> Iterator[None]:
        """The server went away mid-query (a restart, a killed session): a TransientError, a re-run can succeed."""
        try:
            yield
        except pymysql.err.OperationalError as exc:
            code = exc.args[0] if exc.args else None
            if code not in _LOST:
                raise
            self._conn = None  # never reused
            where = f"{self.config.host}:{self.config.port}"
            raise TransientError(
                f"lost the connection to mysql at {where}: {redact(str(exc.args[-1]))}"
            ) from None

    def _query_one(self, sql: str) -> tuple:
        with self.conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchone()

    def disconnect(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # contract
    def preflight(self) -> list[Problem]:
        return run_preflight(self.conn, self.config, self.mariadb)

    def setup(self) -> None:
        """Nothing to create: a binlog reader needs no slot (see ``preflight`` for the requirements)."""

    def table_schemas(self) -> dict[str, TableSchema]:
        with self._lost_connection():
            infos = load_table_info(self.conn, self.config.tables)
        missing = [t for t in self.config.tables if t not in infos]
        if missing:
            raise ConfigError(
                f"expected the tables {missing} to exist, found none of that name",
                hint="create them or remove them from the pipeline's tables",
            )
        return {name: schema_from_info(info) for name, info in infos.items()}

    def current_position(self) -> BinlogPosition:
        """The binlog position everything before which is committed and visible (``_position.visible_end``)."""
        with self._lost_connection():
            return visible_end(self.conn, self.mariadb)

    def checkpoint_position(self) -> BinlogPosition | None:
        return None

    def checkpoint(self, position: BinlogPosition) -> None:
        if self._acknowledged is None or position > self._acknowledged:
            self._acknowledged = position

    def row_count(self, table: str) -> int:
        database, name = table.split(".", 1)
        with self.conn.cursor() as cur:
            cur.execute(f"SELECT COUNT(*) FROM {_quote(database)}.{_quote(name)}")
            return int(cur.fetchone()[0])

    def binlog_files(self) -> list[str]:
        with self.conn.cursor() as cur:
            cur.execute("SHOW BINARY LOGS")
            return [r[0] for r in cur.fetchall()]

    def read_changes(self, start: BinlogPosition, end: BinlogPosition) -> Iterator[ChangeEvent]:
        """The changes of (start, end], extended to the next transaction boundary; see ``RangeReader``.

        Raises ``LogPurgedError`` when ``start``'s binlog file is no longer on the server.
        """
        self._check_not_purged(start)
        infos: dict = dict.fromkeys(self.config.tables)
        infos.update(load_table_info(self.conn, self.config.tables))
        reader = RangeReader(
            self._open,
            infos,
            self.config.server_id,
            self._checksum,
            self.config.chunk_rows,
            self._find_commit,
            self.mariadb,
            self._resync_floors,
        )
        try:
            yield from reader.read(start, end)
        except DumpError as exc:
            if exc.code == _PURGED:
                self._check_not_purged(start)
            raise

    # snapshots (docs/architecture.md, "Snapshots"; snapshot.py for why they are consistent)
    def set_resync_floors(self, floors: Mapping[str, int]) -> None:
        """Each table's latest whole-table re-sync floor: a DDL the binlog cannot follow (a rename, rows moved
        without row events) below it is superseded by that re-sync and no longer stops the capture."""
        self._resync_floors = dict(floors)

    def snapshot_floor(self) -> BinlogPosition:
        """The binlog end now: every snapshot started later corresponds to a coordinate at or after it."""
        return self.current_position()

    def plan_chunks(self, table: str, chunk_rows: int, key_range: KeyRange = FULL_RANGE) -> list[KeyRange]:
        """Walk the table's primary key in steps of ``chunk_rows`` keys; bounds are exact JSON values (_keys.py)."""
        schema = self._snapshot_tables([table])[table].schema
        conn = self._open_text()
        try:
            return plan_key_ranges(conn, schema, chunk_rows, key_range)
        except pymysql.err.MySQLError as exc:
            raise translate(exc, table, select_grant(self.config)) from None
        finally:
            conn.close()

    def read_snapshot(self, chunks: Sequence[SnapshotChunk], parallelism: int) -> Iterator[Rows]:
        """The chunks' rows as inserts, read in up to ``parallelism`` consistent-snapshot transactions."""
        tables = self._snapshot_tables(sorted({c.table for c in chunks}))
        yield from SnapshotReader(self._open_text, tables, self.config, self.mariadb).read(
            chunks, parallelism
        )

    def _open_text(self) -> pymysql.Connection:
        conn = self._open(conv=_TEXT_CONVERSIONS)
        with conn.cursor() as cur:
            cur.execute(SESSION_SQL)
        return conn

    def _snapshot_tables(self, tables: Sequence[str]) -> dict[str, SnapshotTable]:
        """Schemas and layouts of tables of this pipeline that a snapshot can read (primary key, InnoDB)."""
        unknown = [t for t in tables if t not in self.config.tables]
        if unknown:
            raise SourceError(
                f"expected tables of this pipeline, got {unknown}",
                hint=f"the pipeline replicates {', '.join(self.config.tables)}",
            )
        infos = load_table_info(self.conn, tables)
        out = {}
        for table in tables:
            if table not in infos:
                raise TableChangedError(
                    table,
                    "no longer exists in the source",
                    "remove it from the pipeline's tables, or re-create it and re-sync it",
                )
            out[table] = SnapshotTable(schema_from_info(infos[table]), infos[table])  # MissingPrimaryKeyError
        self._require_transactional(tables)
        return out

    def _require_transactional(self, tables: Sequence[str]) -> None:
        with self.conn.cursor() as cur:
            for table in tables:
                database, name = table.split(".", 1)
                cur.execute(
                    "SELECT ENGINE FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s",
                    (database, name),
                )
                row = cur.fetchone()
                engine = str(row[0] if row else "").lower()
                if engine not in _TRANSACTIONAL_ENGINES:
                    raise SourceError(
                        f"a consistent snapshot of {table} needs a transactional table, found engine "
                        f"{engine or 'none'}",
                        hint=f"ALTER TABLE {table} ENGINE = InnoDB",
                    )

    def _check_not_purged(self, start: BinlogPosition) -> None:
        files = self.binlog_files()
        if start.file not in files:
            raise LogPurgedError(str(start), files[0] if files else "none")

    def _find_commit(self, file: str, offset: int) -> tuple[int, int]:
        """(version, commit time in µs) of the transaction open at (file, offset): read ahead to its commit."""
        conn = self._open()
        try:
            server_id = self.config.server_id + LOOKAHEAD_SERVER_ID_OFFSET
            for event in dump_events(conn, file, offset, server_id, self._checksum):
                if event.type == E.ROTATE:
                    file = event.body[8:].decode()
                elif event.type == E.XID or (
                    event.type in (E.QUERY, E.QUERY_COMPRESSED) and _is_commit(event)
                ):
                    return BinlogPosition(file, event.log_pos).version, event.timestamp * 1_000_000
        finally:
            conn.close()
        raise TransientError(f"the transaction open at {file}:{offset} has no commit in the binlog yet")


def _quote(identifier: str) -> str:
    return "`" + identifier.replace("`", "``") + "`"


def _is_commit(event: Event) -> bool:
    query = query_text(event)[1].lstrip()[:8].upper()
    return query.startswith(b"COMMIT") or query.startswith(b"ROLLBACK")
