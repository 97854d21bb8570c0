"""StarRocks sink configuration: ``starrocks://user:password@fe-host:9030/database?http_port=8030`` or keys."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ...core.errors import ConfigError
from .._policy import OutOfRange
from ..toolkit.url import parse_url

__all__ = ["StarRocksConfig"]

_KEYS = {
    "url",
    "type",
    "host",
    "port",
    "http_port",
    "username",
    "user",
    "password",
    "database",
    "pipeline",
    "part_rows",
    "connect_timeout",
    "load_timeout",
    "out_of_range",
    "replication_num",
}
_NUMBERS = (
    ("port", int),
    ("http_port", int),
    ("part_rows", int),
    ("replication_num", int),
    ("connect_timeout", float),
    ("load_timeout", float),
)
_EXAMPLE = "starrocks://user@fe-host:9030/database?http_port=8030 (the password in password_env)"


@dataclass(frozen=True)
class StarRocksConfig:
    """Where and how the sink writes.

    ``port``: the FE's MySQL-protocol port (DDL, state, reads); ``http_port``: the FE's HTTP port,
    where Stream Load requests go (the FE redirects each to a BE). ``database``: every sink table
    goes into this database (created if missing), named after the source table. ``part_rows``: rows
    per Stream Load request (one request is one StarRocks transaction). ``out_of_range``: what to do
    with a value StarRocks cannot hold (see ``sinks/_policy.py``).
    """

    host: str
    port: int = 9030
    http_port: int = 8030
    username: str = "root"
    password: str = field(default="", repr=False)
    database: str = "dbmazz"
    pipeline: str = "main"
    part_rows: int = 500_000
    connect_timeout: float = 10.0
    load_timeout: float = 600.0
    out_of_range: OutOfRange = OutOfRange.REFUSE
    replication_num: int = 1  # the tables' "replication_num" property: 3 on a production cluster

    def describe(self) -> str:
        """``user@host:port/database``, for messages (never the password)."""
        return f"{self.username}@{self.host}:{self.port}/{self.database}"

    @classmethod
    def from_mapping(cls, config: Mapping[str, Any]) -> StarRocksConfig:
        unknown = sorted(set(config) - _KEYS)
        if unknown:
            raise ConfigError(
                f"starrocks sink: unknown option(s) {', '.join(unknown)}; expected {', '.join(sorted(_KEYS))}"
            )
        values: dict[str, Any] = {}
        if config.get("url"):
            values.update(_parse_url(str(config["url"])))
        for key in (
            "host",
            "port",
            "http_port",
            "password",
            "database",
            "pipeline",
            "part_rows",
            "connect_timeout",
            "load_timeout",
            "replication_num",
        ):
            if config.get(key) is not None:
                values[key] = config[key]
        if config.get("username") or config.get("user"):
            values["username"] = config.get("username") or config.get("user")
        if not values.get("host"):
            raise ConfigError(f"starrocks sink: expected 'url' ({_EXAMPLE}) or 'host', got neither")
        try:
            for key, kind in _NUMBERS:
                if key in values:
                    values[key] = kind(values[key])
        except ValueError as exc:
            raise ConfigError(f"starrocks sink: expected a number, got {exc}") from None
        if config.get("out_of_range") is not None:
            values["out_of_range"] = OutOfRange.parse(config["out_of_range"], "starrocks")
        if values.get("part_rows", 1) < 1:
            raise ConfigError(f"starrocks sink: expected part_rows >= 1, got {values['part_rows']}")
        return cls(**values)


def _parse_url(url: str) -> dict[str, Any]:
    parts = parse_url(
        url,
        who="starrocks sink",
        schemes={"starrocks"},
        example=_EXAMPLE,
        default_port=9030,
        options={"http_port"},
    )
    values: dict[str, Any] = {"host": parts.host, "port": parts.port}
    if parts.user:
        values["username"] = parts.user
    if parts.password is not None:
        values["password"] = parts.password
    if parts.database:
        values["database"] = parts.database
    if "http_port" in parts.query:
        values["http_port"] = parts.query["http_port"]
    return values
