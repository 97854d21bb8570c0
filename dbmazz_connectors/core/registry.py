"""The connector registry: one table per kind, plus entry-point groups for out-of-tree connectors.

An entry maps a connector name to ``"module:Class"``; the class has a ``from_config(mapping)``
class method that validates its configuration. Modules load lazily, so a missing driver extra
only matters for the connectors actually used.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Any, cast
from urllib.parse import urlsplit

from .errors import ConfigError, UnknownConnectorError
from .protocols import Sink, Source

__all__ = [
    "SOURCES",
    "SINKS",
    "SCHEMES",
    "connector_for_scheme",
    "create_source",
    "create_sink",
    "source_class",
    "sink_class",
]

SOURCES: dict[str, str] = {
    "postgres": "dbmazz_connectors.sources.postgres.source:PostgresSource",
    "mysql": "dbmazz_connectors.sources.mysql.source:MySqlSource",
}

SINKS: dict[str, str] = {
    "duckdb": "dbmazz_connectors.sinks.duckdb.sink:DuckDbSink",
    "clickhouse": "dbmazz_connectors.sinks.clickhouse.sink:ClickHouseSink",
    "postgres": "dbmazz_connectors.sinks.postgres.sink:PostgresSink",
    "starrocks": "dbmazz_connectors.sinks.starrocks.sink:StarRocksSink",
}

# URL scheme -> connector name, for configs given as a URL
SCHEMES: dict[str, str] = {
    "postgres": "postgres",
    "postgresql": "postgres",
    "mysql": "mysql",
    "mariadb": "mysql",
    "duckdb": "duckdb",
    "clickhouse": "clickhouse",
    "http": "clickhouse",
    "https": "clickhouse",
    "starrocks": "starrocks",
}

_GROUPS = {"source": "dbmazz.sources", "sink": "dbmazz.sinks"}


def _registered(kind: str) -> dict[str, str]:
    table = dict(SOURCES if kind == "source" else SINKS)
    for ep in entry_points(group=_GROUPS[kind]):
        table.setdefault(ep.name, ep.value)
    return table


def connector_for_scheme(scheme: str) -> str | None:
    """The connector a URL scheme names: the in-tree table, else an out-of-tree connector registered under that
    name through an entry point (``sqlite = "pkg.sink:SqliteSink"`` serves ``sqlite://...`` urls)."""
    scheme = scheme.split("+")[0].lower()
    if scheme in SCHEMES:
        return SCHEMES[scheme]
    for group in _GROUPS.values():
        if any(ep.name == scheme for ep in entry_points(group=group)):
            return scheme
    return None


def _load(kind: str, name: str) -> type:
    table = _registered(kind)
    if name not in table:
        raise UnknownConnectorError(kind, name, list(table))
    module_name, _, attr = table[name].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"the {kind} {name!r} needs a driver that is not installed ({exc.name})",
            hint=f"pip install 'dbmazz[{name}]'",
        ) from exc
    return cast(type, getattr(module, attr))


def source_class(name: str) -> type:
    return _load("source", name)


def sink_class(name: str) -> type:
    return _load("sink", name)


def _normalise(kind: str, config: Mapping[str, Any] | str) -> tuple[str, dict[str, Any]]:
    if isinstance(config, str):
        config = {"url": config}
    config = dict(config)
    name = config.pop("type", None)
    if name is None and "url" in config:
        name = connector_for_scheme(urlsplit(str(config["url"])).scheme)
    if name is None:
        raise ConfigError(f"expected a {kind} 'type' or a 'url' with a known scheme, got neither")
    return str(name), config


def create_source(config: Mapping[str, Any] | str) -> Source[Any]:
    """Build a source from ``{"type": ..., ...}`` or a URL (``postgresql://...``)."""
    name, rest = _normalise("source", config)
    return cast(Source[Any], cast(Any, source_class(name)).from_config(rest))


def create_sink(config: Mapping[str, Any] | str) -> Sink:
    """Build a sink from ``{"type": ..., ...}`` or a URL (``duckdb:///path.db``)."""
    name, rest = _normalise("sink", config)
    return cast(Sink, cast(Any, sink_class(name)).from_config(rest))
