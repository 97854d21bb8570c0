"""Dagster orchestration for dbmazz: pipelines from configuration, sensors, partitioned assets, checks."""

from .component import DbmazzPipelineComponent
from .definitions import build_definitions, load_pipeline_configs
from .resources import ChangeLogConfig, ConnectorConfig, DbmazzPipelineResource, SnapshotSettingsConfig
from .translator import AssetRole, DbmazzAssetData, DbmazzTranslator

__all__ = [
    "DbmazzPipelineComponent",
    "build_definitions",
    "load_pipeline_configs",
    "DbmazzTranslator",
    "DbmazzAssetData",
    "AssetRole",
    "DbmazzPipelineResource",
    "ConnectorConfig",
    "ChangeLogConfig",
    "SnapshotSettingsConfig",
]
