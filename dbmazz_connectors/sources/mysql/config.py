"""Configuration of the MySQL/MariaDB source, validated from the pipeline's source mapping."""

from __future__ import annotations

import os
import ssl
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from ...core.errors import ConfigError
from ...core.schema import split_qualified

__all__ = ["MySqlConfig", "default_server_id", "LOOKAHEAD_SERVER_ID_OFFSET", "SNAPSHOT_METHODS", "SSL_MODES"]

_KEYS = {
    "url",
    "pipeline",
    "tables",
    "server_id",
    "catch_up_window_seconds",
    "chunk_rows",
    "password",
    "connect_timeout_seconds",
    "read_block_rows",
    "read_block_bytes",
    "snapshot_method",
    "lock_wait_seconds",
    "ssl_mode",
    "ssl_ca",
    "ssl_cert",
    "ssl_key",
}
# MySQL client names: DISABLED plain TCP; PREFERRED (the default) TLS when the server offers it, unverified;
# REQUIRED TLS or no connection (the server not verified); VERIFY_CA the server's certificate signed by ssl_ca;
# VERIFY_IDENTITY also issued for the url's host
SSL_MODES = ("DISABLED", "PREFERRED", "REQUIRED", "VERIFY_CA", "VERIFY_IDENTITY")
_TLS_KEYS = ("ssl_mode", "ssl_ca", "ssl_cert", "ssl_key")
SNAPSHOT_METHODS = ("auto", "binlog_snapshot", "lock_tables")
LOOKAHEAD_SERVER_ID_OFFSET = 2**31  # the second reader that finds a large transaction's commit


def default_server_id(pipeline: str) -> int:
    """The reader's server_id when none is configured: 1,000,000,000 + crc32(pipeline) mod 10^9."""
    return 1_000_000_000 + zlib.crc32(pipeline.encode()) % 1_000_000_000


@dataclass(frozen=True)
class MySqlConfig:
    """Where the server is, which tables to capture, and how to identify the binlog reader."""

    host: str
    port: int
    user: str
    database: str
    pipeline: str
    tables: tuple[str, ...]
    server_id: int
    catch_up_window_seconds: int = 86_400
    chunk_rows: int = 100_000
    connect_timeout_seconds: int = 10
    read_block_rows: int = 50_000  # snapshot rows decoded together (memory bound)
    read_block_bytes: int = 32 * 1024 * 1024
    snapshot_method: str = "auto"  # auto: binlog_snapshot on MariaDB, lock_tables on MySQL
    lock_wait_seconds: int = 10  # lock_tables: how long LOCK TABLES may wait for a running transaction
    password: str | None = field(default=None, repr=False)
    ssl_mode: str = "PREFERRED"
    ssl_ca: str | None = None
    ssl_cert: str | None = None
    ssl_key: str | None = None

    def __post_init__(self) -> None:
        if self.snapshot_method not in SNAPSHOT_METHODS:
            raise ConfigError(
                f"expected a snapshot_method in {list(SNAPSHOT_METHODS)}, got {self.snapshot_method!r}"
            )
        if self.read_block_rows < 1 or self.read_block_bytes < 1024 or self.lock_wait_seconds < 1:
            raise ConfigError(
                "expected read_block_rows >= 1, read_block_bytes >= 1024 and lock_wait_seconds >= 1, "
                f"got {self.read_block_rows}, {self.read_block_bytes}, {self.lock_wait_seconds}"
            )

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> MySqlConfig:
        unknown = set(mapping) - _KEYS
        if unknown:
            raise ConfigError(
                f"unknown mysql source option(s) {sorted(unknown)}; expected some of {sorted(_KEYS)}"
            )
        url = mapping.get("url")
        if not url:
            raise ConfigError(
                "expected a mysql source 'url' like mysql://user:password@host:3306/db, got none"
            )
        try:
            parts = urlsplit(str(url))
            port = parts.port  # parsed here: a bad port is a ValueError
        except (
            ValueError
        ) as exc:  # the message names the bad part only, never the whole url (it may hold a password)
            raise ConfigError(
                f"the mysql source url is not valid: {exc}",
                hint="expected mysql://user@host:3306/database, the password in password_env",
            ) from None
        if parts.scheme.split("+")[0].lower() not in ("mysql", "mariadb"):
            raise ConfigError(f"expected a mysql:// or mariadb:// url, got scheme {parts.scheme!r}")
        pipeline = str(mapping.get("pipeline") or "dbmazz")
        tables = tuple(str(t) for t in mapping.get("tables") or ())
        for table in tables:
            try:
                split_qualified(table, "database")
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        server_id = int(mapping.get("server_id") or default_server_id(pipeline))
        if not 1 <= server_id < LOOKAHEAD_SERVER_ID_OFFSET:
            raise ConfigError(
                f"expected a server_id between 1 and {LOOKAHEAD_SERVER_ID_OFFSET - 1}, got {server_id}"
            )
        password = mapping.get("password") or (unquote(parts.password) if parts.password else None)
        tls = _tls_options(parts.query, mapping)
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=port or 3306,
            user=unquote(parts.username or "root"),
            database=parts.path.lstrip("/"),
            pipeline=pipeline,
            tables=tables,
            server_id=server_id,
            catch_up_window_seconds=int(mapping.get("catch_up_window_seconds", 86_400)),
            chunk_rows=int(mapping.get("chunk_rows", 100_000)),
            connect_timeout_seconds=int(mapping.get("connect_timeout_seconds", 10)),
            read_block_rows=int(mapping.get("read_block_rows", 50_000)),
            read_block_bytes=int(mapping.get("read_block_bytes", 32 * 1024 * 1024)),
            snapshot_method=str(mapping.get("snapshot_method", "auto")),
            lock_wait_seconds=int(mapping.get("lock_wait_seconds", 10)),
            password=password,
            **tls,
        )

    def snapshot_method_for(self, mariadb: bool) -> str:
        """The snapshot method in effect: ``auto`` is binlog_snapshot on MariaDB, lock_tables on MySQL."""
        if self.snapshot_method != "auto":
            return self.snapshot_method
        return "binlog_snapshot" if mariadb else "lock_tables"

    def connect_kwargs(self) -> dict[str, Any]:
        """pymysql.connect keyword arguments (the password included: never log them)."""
        kwargs = {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password or "",
            "charset": "utf8mb4",
            "autocommit": True,
            "connect_timeout": self.connect_timeout_seconds,
        }
        context = self.ssl_context()
        if context is not None:
            kwargs["ssl"] = context
        elif self.ssl_mode == "DISABLED":
            kwargs["ssl_disabled"] = True
        return kwargs

    @property
    def tls_required(self) -> bool:
        """Whether a connection without TLS must be refused (pymysql goes on in clear if the server offers none)."""
        return self.ssl_mode in ("REQUIRED", "VERIFY_CA", "VERIFY_IDENTITY")

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context of ``ssl_mode`` (None: DISABLED, or PREFERRED left to pymysql)."""
        if self.ssl_mode in ("DISABLED", "PREFERRED"):
            return None
        verify = self.ssl_mode in ("VERIFY_CA", "VERIFY_IDENTITY")
        context = ssl.create_default_context(cafile=self.ssl_ca)
        context.check_hostname = self.ssl_mode == "VERIFY_IDENTITY"
        context.verify_mode = ssl.CERT_REQUIRED if verify else ssl.CERT_NONE
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.ssl_cert:
            context.load_cert_chain(self.ssl_cert, self.ssl_key)
        return context


def _tls_options(query: str, mapping: Mapping[str, Any]) -> dict[str, Any]:
    """ssl_mode/ssl_ca/ssl_cert/ssl_key from the url's query (``?ssl_mode=VERIFY_IDENTITY&ssl_ca=/ca.pem``) and the
    config's keys (which win). An ssl_ca alone means VERIFY_IDENTITY; files must exist."""
    parsed = parse_qs(query)
    found = {k: parsed[k][-1] for k in _TLS_KEYS if parsed.get(k)}
    found.update({k: str(mapping[k]) for k in _TLS_KEYS if mapping.get(k) is not None})
    mode = found.get("ssl_mode", "VERIFY_IDENTITY" if found.get("ssl_ca") else "PREFERRED").upper()
    if mode not in SSL_MODES:
        raise ConfigError(
            f"expected ssl_mode to be one of {', '.join(SSL_MODES)}, got {found['ssl_mode']!r}",
            hint="VERIFY_IDENTITY checks the server's certificate (with ssl_ca) and its host name",
        )
    if mode in ("VERIFY_CA", "VERIFY_IDENTITY") and not found.get("ssl_ca"):
        raise ConfigError(
            f"ssl_mode {mode} needs ssl_ca, the CA certificate the server is verified with",
            hint="set ssl_ca: /path/to/ca.pem",
        )
    for key in ("ssl_ca", "ssl_cert", "ssl_key"):
        if found.get(key) and not os.path.isfile(found[key]):
            raise ConfigError(
                f"{key} {found[key]} is not a readable file",
                hint=f"give {key} the path of a PEM file on the machine that runs dbmazz",
            )
    return {
        "ssl_mode": mode,
        "ssl_ca": found.get("ssl_ca"),
        "ssl_cert": found.get("ssl_cert"),
        "ssl_key": found.get("ssl_key"),
    }
