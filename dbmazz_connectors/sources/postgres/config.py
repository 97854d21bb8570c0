"""Configuration of the PostgreSQL source: validated at the boundary (pydantic), then a frozen dataclass."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ...core.errors import ConfigError
from ...core.schema import split_qualified

__all__ = ["PostgresSourceConfig", "ColumnSelection"]

_SLOT_NAME = re.compile(r"^[a-z0-9_]{1,63}$")
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
_TLS_KEYS = ("sslmode", "sslrootcert", "sslcert", "sslkey")


class _Columns(BaseModel):
    """Per-table column choices: ``exclude`` never leaves the source, ``as_text`` is carried as its text form."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    exclude: list[str] = Field(default_factory=list, description="columns not replicated")
    as_text: list[str] = Field(
        default_factory=list, description="columns replicated as their text form (a string)"
    )


class _Input(BaseModel):
    """What a user may write under ``source:`` for PostgreSQL."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(description="postgresql://user[:password]@host:port/database")
    password: str | None = Field(None, description="password, if not in the url")
    pipeline: str = Field(description="pipeline name (the slot and publication are named after it)")
    tables: list[str] = Field(min_length=1, description="qualified tables, schema.table")
    slot: str | None = Field(None, description="replication slot name; default dbmazz_<pipeline>")
    publication: str | None = Field(None, description="publication name; default dbmazz_<pipeline>")
    replica_identity_full: bool | list[str] = Field(
        False, description="tables that setup() switches to REPLICA IDENTITY FULL (true: all)"
    )
    columns: dict[str, _Columns] = Field(
        default_factory=dict, description='per table: {"exclude": [...], "as_text": [...]}'
    )
    read_block_rows: int = Field(100_000, ge=1_000, description="messages received per block (bounds memory)")
    read_block_bytes: int = Field(
        32 * 1024 * 1024,
        ge=1024 * 1024,
        le=1024**3,
        description="bytes of messages decoded together (bounds memory)",
    )
    decode_threads: int = Field(2, ge=1, le=16, description="threads decoding row chunks in parallel")
    connect_timeout: int = Field(10, ge=1, description="seconds")
    flush_wait_seconds: float = Field(
        2.0, ge=0, description="how long a read waits for the WAL to be flushed"
    )
    capture_mode: Literal["peek", "stream"] = Field(
        "peek",
        description="peek: each read decodes the slot from its restart_lsn (pg_logical_slot_peek_binary_changes); "
        "stream: one START_REPLICATION stream kept open across the reads of a long-lived source, so a transaction "
        "held open does not make every read decode again the WAL since it began",
    )
    sslmode: str | None = Field(None, description="libpq sslmode: disable .. verify-full (default prefer)")
    sslrootcert: str | None = Field(
        None, description="CA certificate file the server is verified with ('system': the system's CAs)"
    )
    sslcert: str | None = Field(None, description="client certificate file (certificate authentication)")
    sslkey: str | None = Field(None, description="client private key file")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a bad port (its message names the port, not the url)
        if parts.scheme not in ("postgres", "postgresql") or not parts.hostname:
            raise ValueError("expected postgresql://user@host:port/database")
        return value

    @field_validator("tables")
    @classmethod
    def _tables(cls, value: list[str]) -> list[str]:
        for table in value:
            split_qualified(table)
        return value


@dataclass(frozen=True)
class ColumnSelection:
    """Which columns of one table do not reach the sinks, and which are carried as text."""

    exclude: frozenset[str] = frozenset()
    as_text: frozenset[str] = frozenset()


NO_SELECTION = ColumnSelection()


def _selections(raw: _Input) -> dict[str, ColumnSelection]:
    unknown = sorted(set(raw.columns) - set(raw.tables))
    if unknown:
        raise ConfigError(
            f"columns names tables that are not replicated: {', '.join(unknown)}",
            hint="list the table under 'tables' or remove it from 'columns'",
        )
    selections = {}
    for table, choice in raw.columns.items():
        both = sorted(set(choice.exclude) & set(choice.as_text))
        if both:
            raise ConfigError(
                f"columns of {table}: {', '.join(both)} both excluded and as_text",
                hint="keep each column in one list",
            )
        selections[table] = ColumnSelection(frozenset(choice.exclude), frozenset(choice.as_text))
    return selections


@dataclass(frozen=True)
class PostgresSourceConfig:
    """A validated PostgreSQL source configuration. ``password`` never appears in ``repr``."""

    host: str
    port: int
    dbname: str
    user: str
    password: str | None = field(repr=False)
    pipeline: str
    tables: tuple[str, ...]
    slot: str
    publication: str
    replica_identity_full: tuple[str, ...]
    columns: Mapping[str, ColumnSelection] = field(default_factory=dict, hash=False)
    read_block_rows: int = 100_000
    read_block_bytes: int = 32 * 1024 * 1024
    decode_threads: int = 2
    connect_timeout: int = 10
    flush_wait_seconds: float = 2.0
    capture_mode: str = "peek"  # "peek" or "stream" (README, "Capture modes")
    tls: Mapping[str, str] = field(
        default_factory=dict, hash=False
    )  # libpq sslmode/sslrootcert/sslcert/sslkey

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> PostgresSourceConfig:
        """Validate a user mapping; raises ``ConfigError`` naming each bad key."""
        try:
            raw = _Input(**dict(mapping))
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
            raise ConfigError(f"postgres source config is invalid: {problems}") from None
        parts = urlsplit(raw.url)
        default_name = f"dbmazz_{raw.pipeline}".lower()
        slot = raw.slot or default_name
        if not _SLOT_NAME.match(slot):
            raise ConfigError(
                f"expected a slot name of lowercase letters, digits and underscores (<= 63), got {slot!r}",
                hint="set 'slot' explicitly",
            )
        full = raw.replica_identity_full
        if full is True:
            full_tables = tuple(raw.tables)
        else:
            full_tables = tuple(full or ())
            unknown = sorted(set(full_tables) - set(raw.tables))
            if unknown:
                raise ConfigError(
                    f"replica_identity_full names tables that are not replicated: {', '.join(unknown)}"
                )
        return cls(
            host=parts.hostname or "localhost",
            port=parts.port or 5432,
            dbname=unquote(parts.path.lstrip("/")) or "postgres",
            user=unquote(parts.username or "postgres"),
            password=raw.password
            if raw.password is not None
            else (unquote(parts.password) if parts.password else None),
            pipeline=raw.pipeline,
            tables=tuple(raw.tables),
            slot=slot,
            publication=raw.publication or default_name,
            replica_identity_full=full_tables,
            columns=_selections(raw),
            read_block_rows=raw.read_block_rows,
            read_block_bytes=raw.read_block_bytes,
            decode_threads=raw.decode_threads,
            connect_timeout=raw.connect_timeout,
            flush_wait_seconds=raw.flush_wait_seconds,
            capture_mode=raw.capture_mode,
            tls=tls_options(raw.url, {k: getattr(raw, k) for k in _TLS_KEYS}),
        )

    def selection(self, table: str) -> ColumnSelection:
        """The column choices for ``table`` (none: every column, as mapped)."""
        return self.columns.get(table, NO_SELECTION)

    def connect_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``psycopg.connect`` (the password kept out of any conninfo string)."""
        kwargs: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "dbname": self.dbname,
            "user": self.user,
            "connect_timeout": self.connect_timeout,
            "application_name": f"dbmazz_{self.pipeline}",
        }
        if self.password is not None:
            kwargs["password"] = self.password
        kwargs.update(self.tls)
        return kwargs


def tls_options(url: str, explicit: Mapping[str, str | None]) -> dict[str, str]:
    """libpq's TLS settings from the url's query (``?sslmode=verify-full&sslrootcert=/ca.pem``) and from the
    config's keys (which win); files must exist, sslmode must be one libpq knows."""
    query = parse_qs(urlsplit(url).query)
    found = {k: query[k][-1] for k in _TLS_KEYS if query.get(k)}
    found.update({k: str(v) for k, v in explicit.items() if v is not None})
    mode = found.get("sslmode")
    if mode is not None and mode not in SSL_MODES:
        raise ConfigError(
            f"expected sslmode to be one of {', '.join(SSL_MODES)}, got {mode!r}",
            hint="verify-full checks the server's certificate and host name (with sslrootcert)",
        )
    for key in ("sslrootcert", "sslcert", "sslkey"):
        path = found.get(key)
        if path and not (key == "sslrootcert" and path == "system") and not os.path.isfile(path):
            raise ConfigError(
                f"{key} {path} is not a readable file",
                hint=f"give {key} the path of a PEM file on the machine that runs dbmazz",
            )
    if mode in ("verify-ca", "verify-full") and "sslrootcert" not in found:
        raise ConfigError(
            f"sslmode={mode} needs sslrootcert, the CA certificate the server is verified with",
            hint="set sslrootcert: /path/to/ca.pem (or 'system' for the system's CAs)",
        )
    return found
