"""Names of a pipeline's Dagster objects, and the default translator's asset keys.

Jobs, sensors, partitions and the resource key are named here. Asset keys are the translator's
(``translator.py``): ``source_key``, ``changes_key`` and ``sink_key`` are what ``DbmazzTranslator``
returns by default; code that needs a pipeline's keys asks its ``PipelineSpecs``, never these.

Table names come from the source and may hold anything a database accepts (spaces, quotes, dashes,
unicode, reserved words, names differing only in case); Dagster names allow ``[A-Za-z0-9_]`` only.
Every table therefore maps to a key part and an identifier that are valid, unique and stable:
``public.orders`` stays ``public.orders``; any other name has its other characters replaced by ``_``
and a short hash of the original appended (``public.my table`` -> ``public.my_table_1c9f0e2a``). The
original name stays in the assets' metadata (``dbmazz/table``) and descriptions.
"""

from __future__ import annotations

import hashlib
import re
from urllib.parse import urlsplit

from dagster import AssetKey, DynamicPartitionsDefinition

from dbmazz_connectors.config import PipelineConfig
from dbmazz_connectors.core import ConfigError
from dbmazz_connectors.core.registry import connector_for_scheme

__all__ = [
    "resource_key",
    "changes_key",
    "source_key",
    "sink_key",
    "batch_partitions",
    "job_name",
    "sensor_name",
    "sink_kind",
    "source_kind",
    "resync_job_name",
    "PIPELINE_TAG",
    "KIND_TAG",
    "PARTITION_TAG",
    "table_key_part",
    "pool_name",
    "table_identifier",
    "check_table_keys",
    "safe_name",
    "TABLE_METADATA",
]

PIPELINE_TAG = "dbmazz/pipeline"
KIND_TAG = "dbmazz/kind"  # "cdc" or "snapshot", on batch runs and their materializations
PARTITION_TAG = "dagster/partition"
TABLE_METADATA = "dbmazz/table"  # the source table's own name, on every asset of the table

_PLAIN_PART = re.compile(r"^[A-Za-z0-9_]+$")
_OTHER = re.compile(r"[^A-Za-z0-9_]+")
_MAX_PART = 60  # a replaced part is cut to this (its hash keeps it unique): keys stay readable


def _digest(text: str) -> str:
    """8 hex digits of the text's BLAKE2b hash: the same in every process and release (unlike ``hash``)."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=4).hexdigest()


def _replace(text: str) -> str:
    return _OTHER.sub("_", text)[:_MAX_PART] or "_"


def safe_name(text: str) -> str:
    """``text`` if it is a valid Dagster name, else its other characters replaced and its hash appended."""
    return text if _PLAIN_PART.match(text) else f"{_replace(text)}_{_digest(text)}"


def table_key_part(table: str) -> str:
    """The last part of a table's asset keys: ``schema.table`` itself when both names are plain
    (``[A-Za-z0-9_]``), else both cleaned and the table's hash appended; distinct tables never share one."""
    schema, dot, name = table.partition(".")
    if dot and _PLAIN_PART.match(schema) and _PLAIN_PART.match(name):
        return table
    return f"{_replace(schema)}.{_replace(name)}_{_digest(table)}"


def table_identifier(table: str) -> str:
    """A valid Dagster name for the table (op outputs, check ops), unique per table: ``public_orders_<hash>``."""
    part = table_key_part(table)
    return _replace(part) if part != table else f"{_replace(table)}_{_digest(table)}"


def check_table_keys(tables: list[str]) -> None:
    """Refuses two tables of one pipeline sharing a key part (a plain name that spells another's hashed one)."""
    seen: dict[str, str] = {}
    for table in tables:
        other = seen.setdefault(table_key_part(table), table)
        if other != table:
            raise ConfigError(
                f"expected distinct Dagster keys for tables {other!r} and {table!r}, both map to "
                f"{table_key_part(table)!r}",
                hint="list the tables in two pipelines",
            )


def resource_key(pipeline: str) -> str:
    return f"dbmazz_{pipeline}"


def changes_key(pipeline: str) -> AssetKey:
    return AssetKey([pipeline, "changes"])


def source_key(pipeline: str, table: str) -> AssetKey:
    return AssetKey([pipeline, "source", table_key_part(table)])


def sink_key(pipeline: str, sink: str, table: str) -> AssetKey:
    return AssetKey([pipeline, sink, table_key_part(table)])


def batch_partitions(pipeline: str) -> DynamicPartitionsDefinition:
    return DynamicPartitionsDefinition(name=f"{pipeline}_batches")


def pool_name(pipeline: str) -> str:
    """The Dagster pool of a pipeline's capture and apply steps (batch runs, backfills and re-runs alike)."""
    return f"dbmazz_{safe_name(pipeline)}"


def job_name(pipeline: str) -> str:
    return f"{pipeline}_batch"


def resync_job_name(pipeline: str) -> str:
    return f"{pipeline}_resync"


def sensor_name(pipeline: str) -> str:
    return f"{pipeline}_capture"


def _kind(config: dict, default: str) -> str:
    if "type" in config:
        return str(config["type"])
    return connector_for_scheme(urlsplit(str(config.get("url", ""))).scheme) or default


def source_kind(pipeline: PipelineConfig) -> str:
    return _kind(pipeline.source, "source")


def sink_kind(pipeline: PipelineConfig, sink: str) -> str:
    return _kind(pipeline.sinks[sink], sink)
