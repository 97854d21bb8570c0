"""Names and keys of a pipeline's Dagster objects, in one place."""

from __future__ import annotations

from urllib.parse import urlsplit

from dagster import AssetKey, DynamicPartitionsDefinition

from dbmazz_connectors.config import PipelineConfig
from dbmazz_connectors.core.registry import SCHEMES

__all__ = [
    "resource_key", "changes_key", "source_key", "sink_key", "batch_partitions", "job_name", "sensor_name",
    "sink_kind", "source_kind", "resync_job_name", "PIPELINE_TAG", "KIND_TAG", "PARTITION_TAG",
]

PIPELINE_TAG = "dbmazz/pipeline"
KIND_TAG = "dbmazz/kind"  # "cdc" or "snapshot", on batch runs and their materializations
PARTITION_TAG = "dagster/partition"


def resource_key(pipeline: str) -> str:
    return f"dbmazz_{pipeline}"


def changes_key(pipeline: str) -> AssetKey:
    return AssetKey([pipeline, "changes"])


def source_key(pipeline: str, table: str) -> AssetKey:
    return AssetKey([pipeline, "source", table])


def sink_key(pipeline: str, sink: str, table: str) -> AssetKey:
    return AssetKey([pipeline, sink, table])


def batch_partitions(pipeline: str) -> DynamicPartitionsDefinition:
    return DynamicPartitionsDefinition(name=f"{pipeline}_batches")


def job_name(pipeline: str) -> str:
    return f"{pipeline}_batch"


def resync_job_name(pipeline: str) -> str:
    return f"{pipeline}_resync"


def sensor_name(pipeline: str) -> str:
    return f"{pipeline}_capture"


def _kind(config: dict, default: str) -> str:
    if "type" in config:
        return str(config["type"])
    scheme = urlsplit(str(config.get("url", ""))).scheme.split("+")[0].lower()
    return SCHEMES.get(scheme, default)


def source_kind(pipeline: PipelineConfig) -> str:
    return _kind(pipeline.source, "source")


def sink_kind(pipeline: PipelineConfig, sink: str) -> str:
    return _kind(pipeline.sinks[sink], sink)
