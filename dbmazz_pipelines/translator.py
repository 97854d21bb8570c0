"""How a pipeline's tables become Dagster assets: the translator, and the specs resolved from it.

Every pipeline has three kinds of assets: its **source tables** (external: dbmazz reads them, Dagster
never materializes them), ``changes`` (the captured batches in the change log) and one **sink table**
per sink and table. ``DbmazzTranslator.get_asset_spec`` decides each one's key, group, owners, tags,
kinds, description and metadata; subclass it to change them, as with dagster-dlt's or dagster-sling's
translators::

    class MyTranslator(DbmazzTranslator):
        def get_asset_spec(self, data: DbmazzAssetData) -> dg.AssetSpec:
            spec = super().get_asset_spec(data)
            if data.role is AssetRole.SINK_TABLE:
                return spec.replace_attributes(key=dg.AssetKey(["warehouse", data.table_name]),
                                               group_name="warehouse", owners=["team:data"])
            return spec

Dependencies and partitions are not the translator's: the pipeline wires them (changes depend on the
source tables, sink tables on changes, both partitioned by batch) with whatever keys it returns.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

import dagster as dg

from dbmazz_connectors.config import PipelineConfig
from dbmazz_connectors.core import ConfigError

from .freshness import freshness_policy
from .naming import (
    PIPELINE_TAG,
    TABLE_METADATA,
    changes_key,
    sink_key,
    sink_kind,
    source_key,
    source_kind,
)

__all__ = ["AssetRole", "DbmazzAssetData", "DbmazzTranslator", "PipelineSpecs", "ROLE_TAG"]

ROLE_TAG = "dbmazz/role"  # "source", "changes" or "sink" on every asset of a pipeline


class AssetRole(StrEnum):
    SOURCE_TABLE = "source_table"
    CHANGES = "changes"
    SINK_TABLE = "sink_table"


@dataclass(frozen=True)
class DbmazzAssetData:
    """What the translator is told about one asset: its role, its pipeline, and its table and sink."""

    role: AssetRole
    pipeline: PipelineConfig
    table: str | None = None  # the source table, schema.table (source and sink tables)
    sink: str | None = None  # the sink's name in the pipeline (sink tables)

    @property
    def pipeline_name(self) -> str:
        return self.pipeline.name

    @property
    def table_name(self) -> str | None:
        """The table's own name without its schema (``orders`` for ``public.orders``)."""
        return self.table.rsplit(".", 1)[-1] if self.table else None

    @property
    def source_kind(self) -> str:
        """``postgres``, ``mysql``, ... (the source connector's type)."""
        return source_kind(self.pipeline)

    @property
    def sink_kind(self) -> str | None:
        """``duckdb``, ``clickhouse``, ``postgres``, ... (the sink connector's type)."""
        return sink_kind(self.pipeline, self.sink) if self.sink else None


class DbmazzTranslator:
    """The default asset specs: keys ``<pipeline>/source/<table>``, ``<pipeline>/changes`` and
    ``<pipeline>/<sink>/<table>`` (``naming.py`` makes any table name a valid key part), one group per
    pipeline, kinds for the connector, and descriptions that say which side an asset is."""

    def get_asset_spec(self, data: DbmazzAssetData) -> dg.AssetSpec:
        if data.role is AssetRole.SOURCE_TABLE:
            return self._source_table_spec(data)
        if data.role is AssetRole.CHANGES:
            return self._changes_spec(data)
        return self._sink_table_spec(data)

    def _source_table_spec(self, data: DbmazzAssetData) -> dg.AssetSpec:
        table, kind = str(data.table), data.source_kind
        return dg.AssetSpec(
            source_key(data.pipeline_name, table),
            description=(
                f"{table} (source, {kind}): a table of the source database whose changes pipeline "
                f"{data.pipeline_name} captures; read by dbmazz, never written"
            ),
            group_name=data.pipeline_name,
            kinds={kind, "table"},
            tags={ROLE_TAG: "source", PIPELINE_TAG: data.pipeline_name},
            metadata={TABLE_METADATA: table, "dagster/table_name": table},
        )

    def _changes_spec(self, data: DbmazzAssetData) -> dg.AssetSpec:
        return dg.AssetSpec(
            changes_key(data.pipeline_name),
            description=(
                f"the change batches of pipeline {data.pipeline_name} captured from its source "
                f"({data.source_kind}), staged in the change log (one partition per batch)"
            ),
            group_name=data.pipeline_name,
            kinds={"dbmazz", "parquet"},
            tags={ROLE_TAG: "changes", PIPELINE_TAG: data.pipeline_name},
        )

    def _sink_table_spec(self, data: DbmazzAssetData) -> dg.AssetSpec:
        table, sink, kind = str(data.table), str(data.sink), str(data.sink_kind)
        return dg.AssetSpec(
            sink_key(data.pipeline_name, sink, table),
            description=(
                f"{table} → {sink} (sink, {kind}): the copy of source table {table} that pipeline "
                f"{data.pipeline_name} keeps in sink {sink}"
            ),
            group_name=data.pipeline_name,
            kinds={kind, "table"},
            tags={ROLE_TAG: "sink", PIPELINE_TAG: data.pipeline_name, "dbmazz/sink": sink},
            metadata={TABLE_METADATA: table},
            # Dagster's freshness daemon reads it from the latest materialization, which dbmazz keeps meaning
            # "last known current" (freshness.py: idle tables recorded again, replays restated)
            freshness_policy=freshness_policy(data.pipeline),
        )


@dataclass(frozen=True)
class PipelineSpecs:
    """A pipeline's asset specs as its translator returned them; every object of the pipeline (assets,
    checks, sensor, retention) finds its keys here."""

    pipeline: PipelineConfig
    sources: Mapping[str, dg.AssetSpec]  # by source table
    changes: dg.AssetSpec
    sinks: Mapping[tuple[str, str], dg.AssetSpec]  # by (sink, source table)

    @classmethod
    def resolve(cls, pipeline: PipelineConfig, translator: DbmazzTranslator | None = None) -> PipelineSpecs:
        translator = translator or DbmazzTranslator()

        def spec(data: DbmazzAssetData) -> dg.AssetSpec:
            result = translator.get_asset_spec(data)
            if not isinstance(result, dg.AssetSpec):
                raise ConfigError(
                    f"pipeline {pipeline.name}: expected {type(translator).__name__}.get_asset_spec "
                    f"to return a dagster AssetSpec for the {data.role} {data.table or ''}, "
                    f"got {type(result).__name__}"
                )
            return result

        sources = {t: spec(DbmazzAssetData(AssetRole.SOURCE_TABLE, pipeline, t)) for t in pipeline.tables}
        changes = spec(DbmazzAssetData(AssetRole.CHANGES, pipeline))
        sinks = {
            (s, t): spec(DbmazzAssetData(AssetRole.SINK_TABLE, pipeline, t, s))
            for s in pipeline.sinks
            for t in pipeline.tables
        }
        specs = cls(pipeline, sources, changes, sinks)
        specs._check_unique()
        return specs

    def _check_unique(self) -> None:
        seen: dict[dg.AssetKey, str] = {}
        named = [
            *((s.key, f"source table {t}") for t, s in self.sources.items()),
            (self.changes.key, "changes"),
            *((s.key, f"sink table {t} of sink {k}") for (k, t), s in self.sinks.items()),
        ]
        for key, label in named:
            other = seen.setdefault(key, label)
            if other != label:
                raise ConfigError(
                    f"pipeline {self.pipeline.name}: the translator gave the {other} and the {label} "
                    f"the same asset key {key.to_user_string()}",
                    hint="return a distinct key for each table and sink from get_asset_spec",
                )

    @property
    def changes_key(self) -> dg.AssetKey:
        return self.changes.key

    def source_key(self, table: str) -> dg.AssetKey:
        return self.sources[table].key

    def sink_key(self, sink: str, table: str) -> dg.AssetKey:
        return self.sinks[(sink, table)].key

    @property
    def source_keys(self) -> dict[str, dg.AssetKey]:
        return {t: s.key for t, s in self.sources.items()}

    @property
    def sink_keys(self) -> list[dg.AssetKey]:
        return [s.key for s in self.sinks.values()]
