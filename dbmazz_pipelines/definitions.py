"""Build Dagster Definitions from pipeline configuration (``pipelines.yaml`` or environment variables)."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import dagster as dg

from dbmazz_connectors.config import PipelineConfig, load_pipelines_each, pipeline_from_env
from dbmazz_connectors.core import ConfigError
from dbmazz_connectors.core.errors import redact
from dbmazz_connectors.core.registry import SCHEMES, connector_for_scheme, sink_class, source_class

from .assets import build_changes_asset, build_sink_assets, build_source_specs
from .checks import build_sink_checks
from .naming import (
    PIPELINE_TAG,
    check_table_keys,
    job_name,
    resource_key,
    safe_name,
    sensor_name,
)
from .resources import DbmazzPipelineResource
from .resync import build_resync_job
from .sensors import build_capture_sensor
from .stream import build_stream_job
from .translator import DbmazzTranslator, PipelineSpecs

__all__ = ["build_definitions", "load_pipeline_configs", "configured_definitions", "defs"]

_log = logging.getLogger("dbmazz")

LIVE_PRIORITY = "10"  # of batch runs in the run queue; a UI backfill's runs have 0


def pipelines_configured() -> bool:
    """Whether ``load_pipeline_configs`` finds any configuration (else it raises)."""
    return bool(
        os.environ.get("DBMAZZ_PIPELINES") or os.path.exists("pipelines.yaml") or os.environ.get("SOURCE_URL")
    )


def configured_definitions(translator: DbmazzTranslator | None = None) -> dg.Definitions:
    """The definitions of the configured pipelines (``load_pipeline_configs``); none when nothing is configured,
    for a dg project whose pipelines may all be components."""
    if not pipelines_configured():
        return dg.Definitions()
    return build_definitions(load_pipeline_configs(), translator=translator)


def load_pipeline_configs() -> dict[str, PipelineConfig | ConfigError]:
    """Pipelines from ``$DBMAZZ_PIPELINES`` (a pipelines.yaml), else ``./pipelines.yaml``, else ``SOURCE_URL``/``SINK_URL``/``TABLES``.

    A pipeline whose configuration is invalid maps to its error (see ``build_definitions``)."""
    path = os.environ.get("DBMAZZ_PIPELINES")
    if path:
        return load_pipelines_each(path)
    if os.path.exists("pipelines.yaml"):
        return load_pipelines_each("pipelines.yaml")
    single = pipeline_from_env()
    if single is not None:
        return {single.name: single}
    raise ConfigError(
        "no pipeline configured: set DBMAZZ_PIPELINES to a pipelines.yaml, create ./pipelines.yaml, "
        "or set SOURCE_URL, SINK_URL and TABLES"
    )


def _pipeline_objects(specs: PipelineSpecs):
    pipeline = specs.pipeline
    assets: list = [*build_source_specs(specs), build_changes_asset(specs)]
    assets += [build_sink_assets(specs, sink) for sink in pipeline.sinks]
    keys = [specs.changes_key, *specs.sink_keys]
    job = dg.define_asset_job(
        job_name(pipeline.name),
        # checks run on their own schedule: a count(*) of a large source table per batch would cost more than the batch
        selection=dg.AssetSelection.assets(*keys).without_checks(),
        executor_def=dg.in_process_executor,
        # live batches leave the run queue before queued backfill runs (higher dagster/priority first)
        tags={PIPELINE_TAG: pipeline.name, "dagster/priority": LIVE_PRIORITY},
        description=f"capture one batch of {pipeline.name} and apply it to every sink",
    )
    sink_keys = keys[1:]
    checks_job = dg.define_asset_job(
        f"{pipeline.name}_checks",
        selection=dg.AssetSelection.checks_for_assets(*sink_keys),
        executor_def=dg.in_process_executor,
        description=f"row-count parity, freshness and initial load of every sink table of {pipeline.name}",
    )
    schedule = dg.ScheduleDefinition(
        name=f"{pipeline.name}_checks_schedule",
        job=checks_job,
        cron_schedule=f"*/{pipeline.check_interval_minutes} * * * *",
        default_status=dg.DefaultScheduleStatus.RUNNING,
    )
    stream_job = build_stream_job(specs) if pipeline.run_mode == "stream" else None
    jobs = [job, checks_job, build_resync_job(pipeline), *([stream_job] if stream_job is not None else [])]
    return assets, jobs, schedule, build_capture_sensor(specs, job, stream_job), build_sink_checks(specs)


@dataclass
class _Objects:
    """Everything Dagster holds for the pipelines of one code location."""

    assets: list = field(default_factory=list)
    jobs: list = field(default_factory=list)
    schedules: list = field(default_factory=list)
    sensors: list = field(default_factory=list)
    checks: list = field(default_factory=list)
    resources: dict = field(default_factory=dict)

    def add(self, other: _Objects) -> None:
        for name in ("assets", "jobs", "schedules", "sensors", "checks"):
            getattr(self, name).extend(getattr(other, name))
        self.resources.update(other.resources)

    def definitions(self) -> dg.Definitions:
        # in-process by default, for the runs Dagster builds itself (UI backfills, materializations): a batch's
        # steps take a second or less, a process per step several (docs/dagster.md, "Backfills")
        return dg.Definitions(
            assets=self.assets,
            jobs=self.jobs,
            schedules=self.schedules,
            sensors=self.sensors,
            asset_checks=self.checks,
            resources=self.resources,
            executor=dg.in_process_executor if self.assets else None,
        )


def _validated_objects(pipeline: PipelineConfig, translator: DbmazzTranslator | None) -> _Objects:
    """The pipeline's objects, loaded by Dagster on their own: any error here is this pipeline's alone."""
    for label, config in [
        ("source", pipeline.source),
        *((f"sink {n}", c) for n, c in pipeline.sinks.items()),
    ]:
        _check_connector(pipeline.name, label, config)
    check_table_keys(list(pipeline.tables))
    assets, jobs, schedule, sensor, checks = _pipeline_objects(PipelineSpecs.resolve(pipeline, translator))
    objects = _Objects(
        assets,
        jobs,
        [schedule],
        [sensor],
        checks,
        {resource_key(pipeline.name): DbmazzPipelineResource.for_pipeline(pipeline)},
    )
    objects.definitions().get_repository_def()  # Dagster's own validation (names, keys, jobs), for this pipeline
    return objects


def _check_connector(pipeline: str, label: str, config: dict) -> None:
    """The connector type is known (a misspelt url scheme is found at load, not at the first tick)."""
    kind = "source" if label == "source" else "sink"
    name = config.get("type")
    if name is None and "${" in str(config.get("url", "")):
        return  # the url comes from the environment (SOURCE_URL): its scheme is known when a connector is built
    if name is None:
        scheme = urlsplit(str(config.get("url", ""))).scheme.split("+")[0].lower()
        name = (
            connector_for_scheme(scheme) if scheme else (label.split(" ", 1)[1] if kind == "sink" else None)
        )
        if name is None:
            raise ConfigError(
                f"pipeline {pipeline}: expected a 'type' or a url with a known scheme "
                f"({', '.join(sorted(SCHEMES))}) for the {label}, got {scheme or 'neither'!r}"
            )
    (source_class if kind == "source" else sink_class)(
        str(name)
    )  # UnknownConnectorError names the known ones


def _broken_pipeline(name: str, error: Exception) -> _Objects:
    """A pipeline that cannot load: its capture sensor fails every tick with the error, and an asset
    ``<name>/configuration`` describes it; the other pipelines of the code location load as usual."""
    safe = safe_name(name)
    message = redact(f"pipeline {name} is not loaded: {type(error).__name__}: {error}")
    _log.error(message)

    @dg.sensor(
        name=sensor_name(safe),
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=60,
        description=f"pipeline {name} could not be loaded; this sensor fails with the reason until it is fixed",
    )
    def broken(context: dg.SensorEvaluationContext):
        raise ConfigError(message, hint="fix the pipeline's configuration and reload the code location")

    spec = dg.AssetSpec(
        dg.AssetKey([safe, "configuration"]),
        group_name=safe,
        description=message,
        kinds={"dbmazz"},
        metadata={"dbmazz/error": message, PIPELINE_TAG: name},
    )
    return _Objects(assets=[spec], sensors=[broken])


def build_definitions(
    pipelines: Mapping[str, PipelineConfig | Exception], translator: DbmazzTranslator | None = None
) -> dg.Definitions:
    """Dagster definitions of every pipeline, their assets' specs from ``translator`` (default:
    ``DbmazzTranslator()``). A pipeline given as an error, or whose objects fail to build or to validate,
    becomes a failing sensor and an asset describing the error; the others still load."""
    objects = _Objects()
    for name, pipeline in pipelines.items():
        try:
            if isinstance(pipeline, Exception):
                raise pipeline
            objects.add(_validated_objects(pipeline, translator))
        except Exception as exc:  # noqa: BLE001 - one broken pipeline must not take the code location down
            objects.add(_broken_pipeline(name, exc))
    return objects.definitions()


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions(load_pipeline_configs())
