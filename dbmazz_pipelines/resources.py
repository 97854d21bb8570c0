"""The Dagster resource of one pipeline: its source, sinks, tables and change log as typed, nested config.

Secrets are ``dg.EnvVar``s: Dagster stores and shows the variable's name, and resolves its value only in
the run (or sensor tick) that builds a connector. ``password_env: VAR`` in pipelines.yaml, ``${VAR}`` as a
whole url and ``{{ env.VAR }}`` in a component's ``defs.yaml`` all become ``dg.EnvVar("VAR")``; a ``${VAR}``
inside a longer url stays as written and is resolved when the connector is built.

    DbmazzPipelineResource(
        name="shop",
        source=ConnectorConfig(url="postgresql://dbmazz@db:5432/shop", password=dg.EnvVar("SHOP_PG_PASSWORD"),
                               options={"slot": "dbmazz_shop"}),
        tables=["public.orders"],
        sinks={"duckdb": ConnectorConfig(url="duckdb:///shop.duckdb")},
        changelog=ChangeLogConfig(root="./.dbmazz/changelog"),
    )
"""

from __future__ import annotations

import re
from typing import Any

import dagster as dg
from pydantic import Field

from dbmazz_connectors.changelog import ChangeLog
from dbmazz_connectors.config import DEFAULT_CHANGELOG, PipelineConfig, literal_passwords
from dbmazz_connectors.core import ConfigError, Sink, Source, create_sink, create_source

__all__ = ["DbmazzPipelineResource", "ConnectorConfig", "ChangeLogConfig", "SnapshotSettingsConfig"]

_WHOLE_ENV_REF = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")
_TYPED = ("type", "url", "password", "password_env")


class ConnectorConfig(dg.Config):
    """One connector, the source or a sink: its type or url, its password, its other options."""

    type: str | None = Field(
        None,
        description=(
            "connector type: postgres, mysql (sources); duckdb, clickhouse, postgres (sinks). Default: from the "
            "url's scheme, or for a sink its name"
        ),
    )
    url: str | None = Field(
        None,
        description=(
            "where the database is, e.g. postgresql://user@host:5432/db; without a password (see password), or a "
            "dg.EnvVar holding the whole url"
        ),
    )
    password: str | None = Field(
        None, description="the password, as dg.EnvVar('VAR'): never written in clear"
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "the connector's other options as its README lists them (slot, publication, schema, database, ...)"
        ),
    )

    @classmethod
    def from_mapping(cls, config: dict[str, Any]) -> ConnectorConfig:
        """From a connector mapping of pipelines.yaml: ``password_env`` and a whole-url ``${VAR}`` as EnvVars."""
        url = config.get("url")
        match = _WHOLE_ENV_REF.match(str(url)) if url is not None else None
        password = config.get("password")
        if config.get("password_env"):
            password = dg.EnvVar(str(config["password_env"]))
        elif password is not None and _WHOLE_ENV_REF.match(str(password)):
            password = dg.EnvVar(_WHOLE_ENV_REF.match(str(password)).group(1))
        return cls(
            type=config.get("type"),
            url=dg.EnvVar(match.group(1)) if match else url,
            password=password,
            options={k: v for k, v in config.items() if k not in _TYPED},
        )

    def to_mapping(self) -> dict[str, Any]:
        """The connector mapping (secrets resolved when this is the resource of a run or a sensor tick)."""
        typed = {"type": self.type, "url": self.url, "password": self.password}
        return {**self.options, **{k: v for k, v in typed.items() if v is not None}}


class ChangeLogConfig(dg.Config):
    """Where the captured batches are staged between capture and apply."""

    root: str = Field(
        DEFAULT_CHANGELOG,
        description=("the change log's root: a folder, or a filesystem URI such as s3://bucket/prefix"),
    )


class SnapshotSettingsConfig(dg.Config):
    """How initial loads and re-syncs read the source."""

    chunk_rows: int | None = Field(None, description="primary keys per chunk (one range read)")
    chunks_per_batch: int | None = Field(
        None, description="chunks per snapshot batch (one partition, one run)"
    )
    parallelism: int | None = Field(
        None, description="chunks read at once (default: the machine's cores, 2..4)"
    )


class DbmazzPipelineResource(dg.ConfigurableResource):
    """One pipeline's connectors: a source, its tables, the sinks they are replicated to, the change log."""

    name: str = Field(description="the pipeline's name (letters, digits, underscores)")
    source: ConnectorConfig = Field(description="the source database whose changes are captured")
    tables: list[str] = Field(description="the source tables replicated, as schema.table")
    sinks: dict[str, ConnectorConfig] = Field(
        description="sink name -> the sink the tables are replicated to"
    )
    changelog: ChangeLogConfig = Field(
        default_factory=ChangeLogConfig, description="where batches are staged"
    )
    poll_interval_seconds: int = Field(5, description="how often the capture sensor polls the source")
    retention_batches: int = Field(2000, description="applied batches kept in the change log")
    check_interval_minutes: int = Field(15, description="how often the sink tables' asset checks run")
    snapshot: SnapshotSettingsConfig = Field(
        default_factory=SnapshotSettingsConfig, description="how initial loads and re-syncs read the source"
    )

    @property
    def config(self) -> PipelineConfig:
        """The pipeline as ``PipelineConfig`` (in a run: with its secrets resolved)."""
        snapshot = {k: v for k, v in self.snapshot.model_dump().items() if v is not None}
        return PipelineConfig(
            name=self.name,
            source=self.source.to_mapping(),
            tables=list(self.tables),
            sinks={name: sink.to_mapping() for name, sink in self.sinks.items()},
            changelog=self.changelog.root,
            poll_interval_seconds=self.poll_interval_seconds,
            retention_batches=self.retention_batches,
            check_interval_minutes=self.check_interval_minutes,
            snapshot=snapshot,
        )

    def connect_source(self) -> Source:
        """A connected source; the caller disconnects it."""
        source = create_source(self.config.source_config())
        source.connect()
        return source

    def connect_sink(self, name: str) -> Sink:
        """A connected sink; the caller disconnects it."""
        sink = create_sink(self.config.sink_config(name))
        sink.connect()
        return sink

    def open_changelog(self) -> ChangeLog:
        return ChangeLog(self.changelog.root)

    @classmethod
    def for_pipeline(cls, pipeline: PipelineConfig) -> DbmazzPipelineResource:
        """The resource for ``pipeline``; refuses literal passwords, which Dagster would store and show."""
        labels = literal_passwords(pipeline)
        if labels:
            raise ConfigError(
                f"pipeline {pipeline.name}: the {' and '.join(labels)} config holds a password in clear; "
                "Dagster would store it",
                hint="reference it from the environment: password_env: VAR, or ${VAR} inside the url "
                "({{ env.VAR }} in a component's defs.yaml)",
            )
        snapshot = pipeline.snapshot
        return cls(
            name=pipeline.name,
            source=ConnectorConfig.from_mapping(pipeline.source),
            tables=list(pipeline.tables),
            sinks={name: ConnectorConfig.from_mapping(config) for name, config in pipeline.sinks.items()},
            changelog=ChangeLogConfig(root=pipeline.changelog),
            poll_interval_seconds=pipeline.poll_interval_seconds,
            retention_batches=pipeline.retention_batches,
            check_interval_minutes=pipeline.check_interval_minutes,
            snapshot=SnapshotSettingsConfig(
                chunk_rows=snapshot.chunk_rows,
                chunks_per_batch=snapshot.chunks_per_batch,
                parallelism=snapshot.parallelism,
            ),
        )
