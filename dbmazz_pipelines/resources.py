"""The Dagster resource wrapping one pipeline's connectors (source, sinks, change log)."""

from __future__ import annotations

import json

from dagster import ConfigurableResource
from pydantic import Field

from dbmazz_connectors.changelog import ChangeLog
from dbmazz_connectors.config import PipelineConfig, literal_passwords
from dbmazz_connectors.core import ConfigError, Sink, Source, create_sink, create_source

__all__ = ["DbmazzPipelineResource"]


class DbmazzPipelineResource(ConfigurableResource):
    """One pipeline's connectors. Secrets are not part of this config: they are resolved from the
    environment (``password_env`` / ``${VAR}`` in pipelines.yaml) when a connector is built."""

    pipeline_json: str = Field(description="the validated pipeline configuration, as JSON (no secrets)")

    @property
    def config(self) -> PipelineConfig:
        return PipelineConfig.model_validate(json.loads(self.pipeline_json))

    def source(self) -> Source:
        """A connected source; the caller disconnects it."""
        source = create_source(self.config.source_config())
        source.connect()
        return source

    def sink(self, name: str) -> Sink:
        """A connected sink; the caller disconnects it."""
        sink = create_sink(self.config.sink_config(name))
        sink.connect()
        return sink

    def changelog(self) -> ChangeLog:
        return ChangeLog(self.config.changelog)

    @classmethod
    def for_pipeline(cls, pipeline: PipelineConfig) -> DbmazzPipelineResource:
        """The resource for ``pipeline``; refuses literal passwords, which Dagster would store and show."""
        labels = literal_passwords(pipeline)
        if labels:
            raise ConfigError(
                f"pipeline {pipeline.name}: the {' and '.join(labels)} config holds a password in clear; "
                "Dagster would store it",
                hint="reference it from the environment: password_env: VAR, or ${VAR} inside the url",
            )
        return cls(pipeline_json=pipeline.model_dump_json())
