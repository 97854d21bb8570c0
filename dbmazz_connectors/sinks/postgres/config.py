"""PostgreSQL sink configuration: a ``postgresql://`` URL or host/port/user/password/dbname keys."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ...core.errors import ConfigError
from ...sources.postgres.config import tls_options
from .._policy import OutOfRange
from ..toolkit.url import parse_url

__all__ = ["PostgresSinkConfig"]

_TLS_KEYS = ("sslmode", "sslrootcert", "sslcert", "sslkey")

_KEYS = {
    "url",
    "host",
    "port",
    "user",
    "password",
    "dbname",
    "schema",
    "pipeline",
    "type",
    "connect_timeout",
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "temp_buffers_mb",
    "out_of_range",
}


@dataclass(frozen=True)
class PostgresSinkConfig:
    """Where to write. ``password`` is kept out of ``repr``; ``schema`` puts every table in one schema
    instead of its source schema's name; ``out_of_range``: what to do with a value PostgreSQL cannot
    hold (a text with a NUL character, a JSON text with ``\\u0000``, a date outside its range):
    ``refuse`` (default), ``clamp`` or ``null``."""

    host: str
    port: int
    user: str
    dbname: str
    password: str | None = field(default=None, repr=False)
    pipeline: str = "main"
    schema: str | None = None
    connect_timeout: int = 10
    sslmode: str | None = None
    tls: Mapping[str, str] = field(
        default_factory=dict, hash=False
    )  # libpq sslmode/sslrootcert/sslcert/sslkey
    temp_buffers_mb: int = 512
    out_of_range: OutOfRange = OutOfRange.REFUSE

    @classmethod
    def from_mapping(cls, config: Mapping[str, Any]) -> PostgresSinkConfig:
        unknown = sorted(set(config) - _KEYS)
        if unknown:
            raise ConfigError(
                f"postgres sink: unknown option(s) {', '.join(unknown)}; expected {', '.join(sorted(_KEYS))}"
            )
        values: dict[str, Any] = {}
        if config.get("url"):
            parts = parse_url(
                str(config["url"]),
                who="postgres sink",
                schemes=("postgres", "postgresql"),
                example="postgresql://user@host:5432/dbname (the password in password_env)",
            )
            values = {
                "host": parts.host,
                "port": parts.port,
                "user": parts.user,
                "password": parts.password,
                "dbname": parts.database,
            }
        for key in ("host", "port", "user", "password", "dbname"):
            if config.get(key) is not None:
                values[key] = config[key]
        missing = [k for k in ("host", "user", "dbname") if not values.get(k)]
        if missing:
            raise ConfigError(
                f"postgres sink: expected {', '.join(missing)} (in the url or as keys), got none"
            )
        return cls(
            host=str(values["host"]),
            port=int(values.get("port") or 5432),
            user=str(values["user"]),
            dbname=str(values["dbname"]),
            password=values.get("password"),
            pipeline=str(config.get("pipeline", "main")),
            schema=config.get("schema"),
            connect_timeout=int(config.get("connect_timeout", 10)),
            sslmode=config.get("sslmode"),
            tls=tls_options(str(config.get("url") or ""), {k: config.get(k) for k in _TLS_KEYS}),
            temp_buffers_mb=int(config.get("temp_buffers_mb", 512)),
            out_of_range=OutOfRange.parse(config.get("out_of_range", "refuse"), "postgres"),
        )

    def connect_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "dbname": self.dbname,
            "connect_timeout": self.connect_timeout,
            "application_name": "dbmazz-sink",
        }
        if self.password is not None:
            kwargs["password"] = self.password
        if self.sslmode:
            kwargs["sslmode"] = self.sslmode
        kwargs.update(self.tls)
        return kwargs
