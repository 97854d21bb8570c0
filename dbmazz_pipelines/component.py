"""``DbmazzPipelineComponent``: one pipeline as a ``defs.yaml`` of a dg project.

    type: dbmazz_pipelines.DbmazzPipelineComponent
    attributes:
      source:
        url: postgresql://dbmazz@db.internal:5432/shop
        password: "{{ env.SHOP_PG_PASSWORD }}"
        slot: dbmazz_shop
      tables: [public.orders, public.customers]
      sinks:
        duckdb: {url: "duckdb:///.dbmazz/shop.duckdb"}
      changelog: ./.dbmazz/changelog

The attributes are a pipeline of ``pipelines.yaml`` (docs/operations.md); ``name`` defaults to the folder
holding the file. ``{{ env.VAR }}`` in a connector is not read when the project loads: it becomes a
reference that the pipeline's resource holds as ``dg.EnvVar("VAR")``, resolved only in the run or sensor
tick that connects, so Dagster never stores or shows the secret and ``dg check defs`` needs no secrets.
The definitions are built by the same code as for pipelines.yaml (``build_definitions``); a subclass may
override ``get_translator`` to choose the assets' keys, groups and owners.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import dagster as dg
from dagster.components.utils.translation import TranslationFn, TranslationFnResolver
from pydantic import BaseModel, Field, ValidationError

from dbmazz_connectors.config import DEFAULT_CHANGELOG, PipelineConfig, literal_passwords
from dbmazz_connectors.core import ConfigError

from .definitions import build_definitions
from .translator import DbmazzAssetData, DbmazzTranslator

__all__ = ["DbmazzPipelineComponent", "DbmazzPipelineScaffolder"]

_ENV_TEMPLATE = re.compile(
    r"\{\{\s*env(?:\.([A-Za-z_][A-Za-z0-9_]*)|\(\s*['\"]([A-Za-z_][A-Za-z0-9_]*)['\"]\s*\))\s*\}\}"
)
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _keep_env_references(context: dg.ResolutionContext, value: Any) -> Any:
    """``{{ env.VAR }}`` (or ``{{ env('VAR') }}``) becomes the reference ``${VAR}``, resolved only when a
    connector is built; any other template is rendered now."""
    if isinstance(value, str):
        kept = _ENV_TEMPLATE.sub(lambda m: "${" + (m.group(1) or m.group(2)) + "}", value)
        return context.resolve_value(kept) if "{{" in kept else kept
    if isinstance(value, Mapping):
        return {str(k): _keep_env_references(context, v) for k, v in value.items()}
    if isinstance(value, list):
        return [_keep_env_references(context, v) for v in value]
    return value


def _connector(context: dg.ResolutionContext, value: Any) -> dict[str, Any]:
    return _keep_env_references(context, value or {})


def _sinks(context: dg.ResolutionContext, value: Any) -> dict[str, dict[str, Any]]:
    return {str(name): _keep_env_references(context, config or {}) for name, config in (value or {}).items()}


Connector = Annotated[
    dict[str, Any],
    dg.Resolver(
        _connector,
        model_field_type=dict[str, Any],
        inject_before_resolve=False,
        description=(
            'a connector: type or url, password as "{{ env.VAR }}", and its options (its README); '
            "{{ env.VAR }} is kept as a reference, resolved in the run"
        ),
    ),
]
Sinks = Annotated[
    dict[str, dict[str, Any]],
    dg.Resolver(
        _sinks,
        model_field_type=dict[str, dict[str, Any]],
        inject_before_resolve=False,
        description="sink name -> sink connector (duckdb, clickhouse, postgres), like the source",
    ),
]
Translation = Annotated[
    TranslationFn[DbmazzAssetData],
    TranslationFnResolver[DbmazzAssetData](
        lambda data: {
            "data": data,
            "role": str(data.role),
            "table": data.table,
            "table_name": data.table_name,
            "sink": data.sink,
            "pipeline": data.pipeline_name,
        }
    ),
]


class _YamlTranslator(DbmazzTranslator):
    """The component's translator, then its ``translation`` attributes over each spec."""

    def __init__(self, base: DbmazzTranslator, translation: TranslationFn[DbmazzAssetData]):
        self.base, self.translation = base, translation

    def get_asset_spec(self, data: DbmazzAssetData) -> dg.AssetSpec:
        return self.translation(self.base.get_asset_spec(data), data)


class DbmazzPipelineComponent(dg.Component, dg.Resolvable, dg.Model):
    """A dbmazz CDC pipeline: a source's tables replicated into one or more sinks through a change log, as
    a capture sensor, batch partitions, source/changes/sink-table assets, checks and a re-sync job."""

    name: str | None = Field(
        None, description="pipeline name (letters, digits, underscores); default: the folder's"
    )
    source: Connector
    tables: list[str] = Field(description="the source tables replicated, as schema.table")
    sinks: Sinks
    changelog: str = Field(
        DEFAULT_CHANGELOG, description="change-log root: a folder or a filesystem URI (s3://...)"
    )
    poll_interval_seconds: int = Field(5, description="how often the capture sensor polls the source")
    retention_batches: int = Field(2000, description="applied batches kept in the change log")
    check_interval_minutes: int = Field(15, description="how often the sink tables' asset checks run")
    snapshot: dict[str, Any] | None = Field(
        None, description="chunk_rows, chunks_per_batch, parallelism of snapshots"
    )
    run_mode: Literal["batch", "stream"] = Field(
        "stream",
        description=(
            "stream (default): a long-lived run per pipeline captures and applies a batch every "
            "stream_interval_seconds; batch: one run per batch"
        ),
    )
    stream_minutes: int = Field(10, description="how long one streaming run lives before it ends cleanly")
    stream_interval_seconds: float = Field(1.0, description="how often a streaming run captures a batch")
    max_batch_bytes: int = Field(
        256 * 1024 * 1024,
        description=(
            "the most source log (WAL or binlog bytes) one batch covers, cut at transaction boundaries; 0: no cap"
        ),
    )
    freshness_warn_seconds: int = Field(
        120,
        description=(
            "a sink table not known current for this long is WARN in its Dagster freshness policy (0: no warning)"
        ),
    )
    freshness_fail_seconds: int = Field(
        600,
        description=(
            "a sink table not known current for this long is FAIL in its Dagster freshness policy (0: no policy)"
        ),
    )
    translation: Translation | None = Field(
        None,
        description=(
            "asset attributes (group_name, owners, tags, key, description, ...) applied over every asset's default "
            "spec; templates see role (source_table, changes, sink_table), pipeline, table, table_name, sink, spec"
        ),
    )

    def get_translator(self) -> DbmazzTranslator:
        """The translator of the pipeline's asset specs; override in a subclass to change keys, groups, owners."""
        return DbmazzTranslator()

    def pipeline_config(self, default_name: str) -> PipelineConfig:
        """The attributes as a validated ``PipelineConfig``; invalid ones and passwords in clear are refused."""
        name = self.name or default_name
        if not _NAME.match(name):
            raise ConfigError(
                f"expected a pipeline name of letters, digits and underscores, got {name!r}",
                hint="set attributes.name, or rename the folder holding defs.yaml",
            )
        body = {k: v for k, v in self.model_dump(exclude={"name", "translation"}).items() if v is not None}
        try:
            pipeline = PipelineConfig(name=name, **body)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" if e["loc"] else e["msg"]
                for e in exc.errors()
            )
            raise ConfigError(f"pipeline {name!r} is invalid: {problems}") from None
        leaked = literal_passwords(pipeline)
        if leaked:
            raise ConfigError(
                f"pipeline {name}: the {' and '.join(leaked)} config holds a password in clear",
                hint='write it as "{{ env.VAR }}" and set VAR in the environment of Dagster',
            )
        return pipeline

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        try:
            pipeline = self.pipeline_config(context.path.name)
        except ConfigError as exc:  # the file is named: dg check defs and the UI point at it
            raise ConfigError(f"{context.path / 'defs.yaml'}: {exc}", hint=exc.hint) from None
        translator = self.get_translator()
        if self.translation is not None:
            translator = _YamlTranslator(translator, self.translation)
        return build_definitions({pipeline.name: pipeline}, translator=translator)


class ScaffoldParams(BaseModel):
    """``dg scaffold defs dbmazz_pipelines.DbmazzPipelineComponent <path> --source-url ... --tables ...``"""

    source_url: str | None = Field(None, description="the source's url, without its password")
    password_env: str | None = Field(
        None, description="the environment variable holding the source's password"
    )
    tables: str | None = Field(None, description="comma-separated schema.table names")
    sink_url: str | None = Field(None, description="the sink's url (duckdb:///file.duckdb, clickhouse://...)")


class DbmazzPipelineScaffolder(dg.Scaffolder[ScaffoldParams]):
    """Writes a ``defs.yaml`` to fill in: a source, its tables, one sink, the change log."""

    @classmethod
    def get_scaffold_params(cls) -> type[ScaffoldParams]:
        return ScaffoldParams

    def scaffold(self, request: dg.ScaffoldRequest[ScaffoldParams]) -> None:
        from dagster.components.component_scaffolding import scaffold_component

        params = request.params or ScaffoldParams()
        name = request.target_path.name if _NAME.match(request.target_path.name) else "main"
        sink_url = params.sink_url or f"duckdb:///.dbmazz/{name}.duckdb"
        sink_name = sink_url.split(":", 1)[0] if _NAME.match(sink_url.split(":", 1)[0]) else "sink"
        tables = [t.strip() for t in (params.tables or "public.orders").split(",") if t.strip()]
        scaffold_component(
            request,
            {
                "source": {
                    "url": params.source_url or f"postgresql://dbmazz@localhost:5432/{name}",
                    "password": "{{ env."
                    + (params.password_env or f"{name.upper()}_SOURCE_PASSWORD")
                    + " }}",
                },
                "tables": tables,
                "sinks": {sink_name: {"url": sink_url}},
                "changelog": "./.dbmazz/changelog",
            },
        )


DbmazzPipelineComponent = dg.scaffold_with(DbmazzPipelineScaffolder)(DbmazzPipelineComponent)
