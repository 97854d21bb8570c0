"""ClickHouse sink configuration: ``clickhouse://user:password@host:8123/database`` or separate keys."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ...core.errors import ConfigError
from .._policy import OutOfRange
from ..toolkit.url import flag, parse_url

__all__ = ["ClickHouseConfig"]

_KEYS = {
    "url",
    "type",
    "host",
    "port",
    "username",
    "user",
    "password",
    "database",
    "secure",
    "pipeline",
    "part_rows",
    "dedup_window",
    "connect_timeout",
    "out_of_range",
    "ca_cert",
    "verify",
}
_SCHEMES = {
    "clickhouse": False,
    "clickhouse+http": False,
    "http": False,
    "clickhouse+https": True,
    "https": True,
}


@dataclass(frozen=True)
class ClickHouseConfig:
    """Where and how the sink writes (HTTP interface through clickhouse-connect).

    ``database``: every sink table goes into this database, named after the source table.
    ``part_rows``: rows per insert (one insert is one block, written atomically by ClickHouse).
    ``dedup_window``: the tables' ``non_replicated_deduplication_window`` (insert tokens kept).
    ``out_of_range``: what to do with a value ClickHouse cannot hold (a date outside 0000..9999):
    ``refuse`` (default), ``clamp`` or ``null``; see ``sinks/_policy.py``.
    """

    host: str
    port: int = 8123
    username: str = "default"
    password: str = field(default="", repr=False)
    database: str = "default"
    secure: bool = False
    pipeline: str = "main"
    part_rows: int = 1_000_000
    dedup_window: int = 10_000
    connect_timeout: float = 10.0
    out_of_range: OutOfRange = OutOfRange.REFUSE
    ca_cert: str | None = None  # with secure: the CA file the server's certificate is verified with
    verify: bool = True  # with secure: verify the server's certificate (and host name)

    def describe(self) -> str:
        """``user@host:port/database``, for messages (never the password)."""
        return f"{self.username}@{self.host}:{self.port}/{self.database}"

    @classmethod
    def from_mapping(cls, config: Mapping[str, Any]) -> ClickHouseConfig:
        unknown = sorted(set(config) - _KEYS)
        if unknown:
            raise ConfigError(
                f"clickhouse sink: unknown option(s) {', '.join(unknown)}; "
                f"expected {', '.join(sorted(_KEYS))}"
            )
        values: dict[str, Any] = {}
        if config.get("url"):
            values.update(_parse_url(str(config["url"])))
        for key in (
            "host",
            "port",
            "password",
            "database",
            "pipeline",
            "part_rows",
            "dedup_window",
            "connect_timeout",
        ):
            if config.get(key) is not None:
                values[key] = config[key]
        if config.get("username") or config.get("user"):
            values["username"] = config.get("username") or config.get("user")
        if config.get("secure") is not None:
            values["secure"] = flag(config["secure"])
        if config.get("ca_cert") is not None:
            values["ca_cert"] = str(config["ca_cert"])
        if config.get("verify") is not None:
            values["verify"] = flag(config["verify"])
        if values.get("ca_cert") and not os.path.isfile(values["ca_cert"]):
            raise ConfigError(
                f"clickhouse sink: ca_cert {values['ca_cert']} is not a readable file",
                hint="give ca_cert the path of the PEM file of the CA that signed the server's certificate",
            )
        if not values.get("host"):
            raise ConfigError(
                "clickhouse sink: expected 'url' (clickhouse://user:password@host:8123/database) "
                "or 'host', got neither"
            )
        try:
            for key, kind in (
                ("port", int),
                ("part_rows", int),
                ("dedup_window", int),
                ("connect_timeout", float),
            ):
                if key in values:
                    values[key] = kind(values[key])
        except ValueError as exc:
            raise ConfigError(f"clickhouse sink: expected a number, got {exc}") from None
        if config.get("out_of_range") is not None:
            values["out_of_range"] = OutOfRange.parse(config["out_of_range"], "clickhouse")
        if values.get("part_rows", 1) < 1:
            raise ConfigError(f"clickhouse sink: expected part_rows >= 1, got {values['part_rows']}")
        return cls(**values)


def _parse_url(url: str) -> dict[str, Any]:
    parts = parse_url(
        url, who="clickhouse sink", schemes=_SCHEMES, example="clickhouse://user:password@host:8123/database"
    )
    values: dict[str, Any] = {"host": parts.host, "secure": _SCHEMES[parts.scheme]}
    values["port"] = parts.port or (8443 if values["secure"] else 8123)
    if parts.user:
        values["username"] = parts.user
    if parts.password is not None:
        values["password"] = parts.password
    if parts.database:
        values["database"] = parts.database
    if "secure" in parts.query:
        values["secure"] = flag(parts.query["secure"])
    if "ca_cert" in parts.query:
        values["ca_cert"] = parts.query["ca_cert"]
    if "verify" in parts.query:
        values["verify"] = flag(parts.query["verify"])
    return values
