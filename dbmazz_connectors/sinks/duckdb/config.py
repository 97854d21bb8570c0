"""DuckDB sink configuration: a database file (``duckdb:///path/to/file.duckdb`` or ``path``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ...core.errors import ConfigError
from .._policy import OutOfRange
from ..toolkit.url import parse_url

__all__ = ["DuckDbConfig"]

_KEYS = {
    "url",
    "path",
    "schema",
    "pipeline",
    "type",
    "threads",
    "memory_limit",
    "checkpoint_threshold",
    "row_group_size",
    "lock_wait_seconds",
    "out_of_range",
    "primary_key",
}


@dataclass(frozen=True)
class DuckDbConfig:
    """``path``: the database file (created if missing; ``:memory:`` for a throw-away one).
    ``schema``: put every table in this schema instead of its source schema's name.
    ``checkpoint_threshold``: WAL size at which DuckDB folds the WAL into the file; DuckDB's own
    default (16MB) makes every 100k-change batch pay a checkpoint, so it is raised to 1GB.
    ``row_group_size``: rows per row group (DuckDB's default: 122880). DuckDB writes full row groups
    of a transaction straight into the file instead of the WAL; smaller groups let smaller batches do so
    (measured: no clear gain for 100k-change batches, so DuckDB's default is kept).
    ``lock_wait_seconds``: how long to wait for the file while another process holds it (a reader between
    applies, say) before giving up with a transient error.
    ``primary_key``: declare each table's source key as DuckDB's PRIMARY KEY (an index: point lookups by key use
    it, and DuckDB enforces it). Off by default: the apply keeps one row per key itself, and the index made
    100k-change batches of updates and deletes 2.5x dearer (measured, bench/sink_apply.py). Applies to tables
    created from then on.
    ``out_of_range``: what to do with a value DuckDB cannot hold (``refuse``, ``clamp``, ``null``); DuckDB
    holds every value dbmazz carries (BC and far-future dates, +-infinity, NUL characters), so the
    option exists for uniformity with the other sinks and changes nothing today."""

    path: str
    pipeline: str = "main"
    schema: str | None = None
    threads: int | None = None
    memory_limit: str | None = None
    checkpoint_threshold: str | None = "1GB"
    row_group_size: int | None = None
    lock_wait_seconds: float = 10.0
    out_of_range: OutOfRange = OutOfRange.REFUSE
    primary_key: bool = False

    @classmethod
    def from_mapping(cls, config: Mapping[str, Any]) -> DuckDbConfig:
        unknown = sorted(set(config) - _KEYS)
        if unknown:
            raise ConfigError(
                f"duckdb sink: unknown option(s) {', '.join(unknown)}; expected {', '.join(sorted(_KEYS))}"
            )
        path = config.get("path")
        url = config.get("url")
        if url and not path:
            parts = parse_url(
                str(url), who="duckdb sink", schemes={"duckdb"}, example="duckdb:///path/to/file.duckdb"
            )
            path = (parts.netloc + parts.path) if parts.netloc else parts.path
            path = path[1:] if path.startswith("/:memory:") else path
            path = "/" + path.lstrip("/") if path.startswith("//") else path  # duckdb:////abs/path
        if not path:
            raise ConfigError(
                "duckdb sink: expected 'url' (duckdb:///path/file.duckdb) or 'path', got neither"
            )
        return cls(
            path=str(path),
            pipeline=str(config.get("pipeline", "main")),
            schema=config.get("schema"),
            threads=config.get("threads"),
            memory_limit=config.get("memory_limit"),
            checkpoint_threshold=config.get("checkpoint_threshold", "1GB"),
            row_group_size=config.get("row_group_size"),
            lock_wait_seconds=float(config.get("lock_wait_seconds", 10.0)),
            out_of_range=OutOfRange.parse(config.get("out_of_range", "refuse"), "duckdb"),
            primary_key=_flag(config.get("primary_key", False), "primary_key"),
        )


def _flag(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("true", "false"):
        return str(value).lower() == "true"
    raise ConfigError(f"duckdb sink: expected {key} to be true or false, got {value!r}")
