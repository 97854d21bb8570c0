"""Pipeline configuration: ``pipelines.yaml`` or environment variables -> validated ``PipelineConfig``.

This is the only layer that reads the environment. Secrets are referenced, never written in the
file: ``password_env: SHOP_PG_PASSWORD`` (or ``${VAR}`` inside a URL) is resolved here.

    pipelines:
      shop:
        source:
          url: postgresql://dbmazz@127.0.0.1:5432/shop
          password_env: SHOP_PG_PASSWORD
        tables: [public.orders, public.customers]
        sinks:
          duckdb: {url: "duckdb:///.dbmazz/shop.duckdb"}
          clickhouse: {url: "http://127.0.0.1:8123", database: shop}
        changelog: ./.dbmazz/changelog      # or any pyarrow filesystem URI (s3://bucket/prefix)
        poll_interval_seconds: 5
        run_mode: stream                     # the default: one long-lived run per pipeline; or batch: a run per batch (docs/dagster.md)
        snapshot: {chunk_rows: 100000, chunks_per_batch: 10, parallelism: 4}   # optional: initial loads, re-syncs

Connector mappings go to the registry as they are, plus ``pipeline`` and ``tables`` for sources,
``pipeline`` for sinks; each connector validates its own keys in ``from_config``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .core.errors import ConfigError
from .core.schema import split_qualified
from .snapshots import SnapshotSettings

__all__ = [
    "PipelineConfig",
    "SnapshotConfig",
    "load_pipelines",
    "load_pipelines_each",
    "pipeline_from_env",
    "resolve_secrets",
    "literal_passwords",
]

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
DEFAULT_CHANGELOG = "./.dbmazz/changelog"


class SnapshotConfig(BaseModel):
    """How the pipeline's snapshots (initial loads, re-syncs) are read; defaults are ``SnapshotSettings()``'s."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    chunk_rows: int = Field(
        SnapshotSettings.chunk_rows, ge=1, description="primary keys per chunk (one range read)"
    )
    chunks_per_batch: int = Field(
        SnapshotSettings.chunks_per_batch,
        ge=1,
        description="chunks per snapshot batch (one Dagster partition, one run)",
    )
    parallelism: int | None = Field(
        None, ge=1, description="chunks read at once (default: the machine's cores, 2..4)"
    )

    def settings(self) -> SnapshotSettings:
        if self.parallelism is None:
            return SnapshotSettings(self.chunk_rows, self.chunks_per_batch)
        return SnapshotSettings(self.chunk_rows, self.chunks_per_batch, self.parallelism)


class PipelineConfig(BaseModel):
    """One pipeline: one source, its tables, one or more sinks fed from one capture."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="pipeline name: letters, digits, underscores")
    source: dict[str, Any] = Field(description="source connector config: type or url, plus its options")
    tables: list[str] = Field(min_length=1, description="qualified source tables, schema.table")
    sinks: dict[str, dict[str, Any]] = Field(min_length=1, description="sink name -> sink connector config")
    changelog: str = Field(DEFAULT_CHANGELOG, description="change-log root: a folder or a filesystem URI")
    poll_interval_seconds: int = Field(5, ge=1, description="how often the capture sensor polls the source")
    retention_batches: int = Field(2000, ge=10, description="applied batches kept in the change log")
    check_interval_minutes: int = Field(
        15, ge=1, le=59, description="how often the sink tables' asset checks run"
    )
    snapshot: SnapshotConfig = Field(
        default_factory=SnapshotConfig, description="how initial loads and re-syncs read"
    )
    run_mode: Literal["batch", "stream"] = Field(
        "stream",
        description=(
            "stream (default): a long-lived run per pipeline captures and applies a batch every "
            "stream_interval_seconds (a commit is in the sink within seconds; one run per stream_minutes); "
            "batch: the capture sensor launches one run per batch (~10-30 s from commit to sink, a run per batch)"
        ),
    )
    stream_minutes: int = Field(
        10, ge=1, le=240, description="how long one streaming run lives before it ends cleanly"
    )
    stream_interval_seconds: float = Field(
        1.0, gt=0, le=60, description="how often a streaming run captures a batch"
    )
    max_batch_bytes: int = Field(
        256 * 1024 * 1024,
        ge=0,
        description=(
            "the most source log (WAL or binlog bytes) one batch covers, cut at transaction boundaries: a backlog "
            "becomes several batches; 0: no cap"
        ),
    )
    freshness_warn_seconds: int = Field(
        120,
        ge=0,
        description=(
            "a sink table not known current for this long is WARN in its Dagster freshness policy (0: no warning)"
        ),
    )
    freshness_fail_seconds: int = Field(
        600,
        ge=0,
        description=(
            "a sink table not known current for this long is FAIL in its Dagster freshness policy (0: no policy)"
        ),
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"expected letters, digits and underscores, got {value!r}")
        return value

    @field_validator("tables")
    @classmethod
    def _tables(cls, value: list[str]) -> list[str]:
        for table in value:
            _dotted(table)
            split_qualified(table)
        if len(set(value)) != len(value):
            raise ValueError("expected each table once")
        return value

    @field_validator("changelog")
    @classmethod
    def _changelog(cls, value: str) -> str:
        from .changelog.store import CREDENTIALS_HINT, credentials_in_uri

        if credentials_in_uri(value):  # refused here, before Dagster stores and shows the resource's config
            raise ValueError(f"the change-log URI carries credentials; fix: {CREDENTIALS_HINT}")
        return value

    @field_validator("sinks")
    @classmethod
    def _sinks(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for name in value:
            if not _NAME.match(name):
                raise ValueError(f"expected sink names of letters, digits and underscores, got {name!r}")
        return value

    @model_validator(mode="after")
    def _freshness_windows(self) -> PipelineConfig:
        """Dagster's time-window freshness policy takes windows of a minute or more, the warning one shorter."""
        warn, fail = self.freshness_warn_seconds, self.freshness_fail_seconds
        if fail and fail < 60 or warn and warn < 60:
            raise ValueError(
                "expected freshness_warn_seconds and freshness_fail_seconds of 60 or more (or 0: off)"
            )
        if fail and warn and warn >= fail:
            raise ValueError(
                f"expected freshness_warn_seconds ({warn}) below freshness_fail_seconds ({fail})"
            )
        return self

    @model_validator(mode="after")
    def _one_sink_table_each(self) -> PipelineConfig:
        """Two source tables must never share a sink table: a sink that drops the source schema (ClickHouse,
        or a ``schema`` option) would mix ``a.t`` and ``b.t``."""
        for sink, config in self.sinks.items():
            kind = _sink_kind(sink, config)
            merged = kind == "clickhouse" or (kind in ("postgres", "duckdb") and config.get("schema"))
            if not merged:
                continue  # DuckDB keeps names differing only in case apart itself (its README)
            seen: dict[str, str] = {}
            for table in self.tables:
                name = table.split(".", 1)[1]
                if name in seen:
                    where = (
                        f"its 'schema: {config['schema']}' puts every table in one schema"
                        if kind != "clickhouse"
                        else "ClickHouse puts every table in the database of its url"
                    )
                    other = "database" if kind == "clickhouse" else "schema"
                    raise ValueError(
                        f"sink {sink} would write tables {seen[name]} and {table} into one table {name} ({where}); "
                        f"fix: replicate {table} in a pipeline of its own whose sink has another {other}"
                        + (
                            ""
                            if kind == "clickhouse"
                            else ", or drop the sink's 'schema' option (tables keep their source schema)"
                        )
                        + ", or remove one of them from the tables"
                    )
                seen[name] = table
        return self

    def source_config(self, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
        """The mapping for ``create_source``: secrets resolved (from ``environ``, default the process's), pipeline and tables added."""
        return {**resolve_secrets(self.source, environ), "pipeline": self.name, "tables": list(self.tables)}

    def snapshot_settings(self) -> SnapshotSettings:
        """The settings every snapshot of this pipeline is planned and read with."""
        return self.snapshot.settings()

    def sink_config(self, sink: str, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
        """The mapping for ``create_sink``: secrets resolved, pipeline added; the sink name is the type by default."""
        config = resolve_secrets(self.sinks[sink], environ)
        if "type" not in config and "url" not in config:
            config["type"] = sink
        return {**config, "pipeline": self.name}


def _sink_kind(name: str, config: Mapping[str, Any]) -> str | None:
    """The sink connector a sink config names (``type``, the url's scheme, or the sink's own name)."""
    from .core.registry import connector_for_scheme

    if config.get("type"):
        return str(config["type"])
    if config.get("url") and "${" not in str(config["url"]):
        return connector_for_scheme(urlsplit(str(config["url"])).scheme)
    return name if name in ("duckdb", "clickhouse", "postgres", "starrocks") else None


def _dotted(table: str) -> None:
    """A schema or table name holding a dot is refused with the statement that renames it."""
    quoted = re.fullmatch(r'\s*("(?:[^"]|"")+"|[^."]+)\s*\.\s*("(?:[^"]|"")+"|[^."]+)\s*', table)
    if quoted and '"' not in table:
        return
    if quoted:
        schema, name = (p[1:-1].replace('""', '"') if p.startswith('"') else p for p in quoted.groups())
    elif table.count(".") > 1:
        schema, name = table.split(".", 1)
    else:
        return  # not a dotted name: split_qualified says what is wrong with it
    if "." not in schema + name:
        raise ValueError(
            f"expected tables as schema.table without quotes, got {table!r}; fix: write {schema}.{name}"
        )
    new = name.replace(".", "_")
    raise ValueError(
        f"table {schema!r}.{name!r} ({table}): schema and table names containing a dot are not supported; "
        f'fix: rename it in the source (PostgreSQL: ALTER TABLE "{schema}"."{name}" RENAME TO "{new}"; '
        f"MySQL: RENAME TABLE `{schema}`.`{name}` TO `{schema}`.`{new}`), or remove it from the tables"
    )


def literal_passwords(pipeline: PipelineConfig) -> list[str]:
    """The connectors of ``pipeline`` (``source``, ``sink <name>``) whose config holds a password in clear
    rather than a reference to the environment (``password_env: VAR`` or ``${VAR}`` in the url)."""
    configs = [("source", pipeline.source), *((f"sink {n}", c) for n, c in pipeline.sinks.items())]
    return [label for label, config in configs if _literal_password(config)]


def _literal_password(config: Mapping[str, Any]) -> bool:
    password = config.get("password")
    if password is None and config.get("url"):
        try:
            password = urlsplit(str(config["url"])).password
        except ValueError:
            return False  # an unparsable url: its connector reports it
    return bool(password) and not _ENV_REF.fullmatch(str(password))


def resolve_secrets(config: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Replace ``<key>_env: VAR`` by ``<key>: $VAR`` and ``${VAR}`` inside strings; a missing variable is an error."""
    environ = os.environ if environ is None else environ
    resolved: dict[str, Any] = {}
    for key, value in config.items():
        if key.endswith("_env") and isinstance(value, str):
            if value not in environ:
                raise ConfigError(
                    f"expected environment variable {value} (for {key[:-4]}) to be set, it is not"
                )
            resolved[key[:-4]] = environ[value]
        elif isinstance(value, str):
            resolved[key] = _ENV_REF.sub(lambda m: _env(m.group(1), environ), value)
        else:
            resolved[key] = value
    return resolved


def _env(name: str, environ: Mapping[str, str]) -> str:
    if name not in environ:
        raise ConfigError(f"expected environment variable {name} to be set, it is not")
    return environ[name]


def _validate(name: str, body: Mapping[str, Any]) -> PipelineConfig:
    try:
        return PipelineConfig(name=name, **body)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" if e["loc"] else e["msg"]
            for e in exc.errors()
        )
        raise ConfigError(f"pipeline {name!r} is invalid: {problems}") from None
    except TypeError as exc:
        raise ConfigError(f"pipeline {name!r} is invalid: {exc}") from None


def _read_pipelines(path: str) -> dict[str, Any]:
    try:
        with open(path) as fh:
            document = yaml.safe_load(fh) or {}
    except FileNotFoundError:
        raise ConfigError(f"pipeline file {path} not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"pipeline file {path} is not valid YAML: {exc}") from None
    pipelines = document.get("pipelines") if isinstance(document, dict) else None
    if not isinstance(pipelines, dict) or not pipelines:
        raise ConfigError(f"expected a 'pipelines:' mapping in {path}, found none")
    return pipelines


def load_pipelines(path: str) -> dict[str, PipelineConfig]:
    """Read and validate ``pipelines.yaml``; the first invalid pipeline raises its ``ConfigError``."""
    return {str(name): _validate(str(name), body or {}) for name, body in _read_pipelines(path).items()}


def load_pipelines_each(path: str) -> dict[str, PipelineConfig | ConfigError]:
    """Read ``pipelines.yaml``, validating each pipeline on its own: an invalid one maps to its error.

    For a host of several pipelines (Dagster), where one broken pipeline must not take the others
    down; an unreadable file still raises."""
    found: dict[str, PipelineConfig | ConfigError] = {}
    for name, body in _read_pipelines(path).items():
        try:
            found[str(name)] = _validate(str(name), body if isinstance(body, dict) else {})
        except ConfigError as exc:
            found[str(name)] = exc
    return found


def pipeline_from_env(environ: Mapping[str, str] | None = None) -> PipelineConfig | None:
    """A single pipeline from ``SOURCE_URL``, ``SINK_URL`` (comma-separated ``name=url`` or urls) and ``TABLES``.

    Optional: ``PIPELINE_NAME`` (default ``main``), ``CHANGELOG_ROOT``, ``POLL_INTERVAL_SECONDS``.
    The source URL is kept as a reference to ``SOURCE_URL`` (its password never enters the config);
    sinks that need a password are declared in pipelines.yaml with ``password_env``.
    Returns None when ``SOURCE_URL`` is not set.
    """
    environ = os.environ if environ is None else environ
    if not environ.get("SOURCE_URL"):
        return None
    missing = [v for v in ("SINK_URL", "TABLES") if not environ.get(v)]
    if missing:
        raise ConfigError(f"SOURCE_URL is set, so {' and '.join(missing)} must be too")
    sinks: dict[str, dict[str, Any]] = {}
    for item in environ["SINK_URL"].split(","):
        name, sep, url = item.strip().partition("=")
        if not sep:
            url, name = name, name.split(":", 1)[0]
        sinks[name.strip()] = {"url": url.strip()}
    body: dict[str, Any] = {
        "source": {
            "url": "${SOURCE_URL}"
        },  # resolved when a connector is built: the password stays in the env
        "tables": [t.strip() for t in environ["TABLES"].split(",") if t.strip()],
        "sinks": sinks,
    }
    if environ.get("CHANGELOG_ROOT"):
        body["changelog"] = environ["CHANGELOG_ROOT"]
    if environ.get("POLL_INTERVAL_SECONDS"):
        body["poll_interval_seconds"] = int(environ["POLL_INTERVAL_SECONDS"])
    return _validate(environ.get("PIPELINE_NAME", "main"), body)
