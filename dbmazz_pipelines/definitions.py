"""Build Dagster Definitions from pipeline configuration (``pipelines.yaml`` or environment variables)."""

from __future__ import annotations

import os

import dagster as dg

from dbmazz_connectors.config import PipelineConfig, load_pipelines, pipeline_from_env
from dbmazz_connectors.core import ConfigError

from .assets import build_changes_asset, build_sink_assets, build_source_specs
from .checks import build_sink_checks
from .naming import PIPELINE_TAG, changes_key, job_name, resource_key, sink_key
from .resources import DbmazzPipelineResource
from .resync import build_resync_job
from .sensors import build_capture_sensor

__all__ = ["build_definitions", "load_pipeline_configs", "defs"]


def load_pipeline_configs() -> dict[str, PipelineConfig]:
    """Pipelines from ``$DBMAZZ_PIPELINES`` (a pipelines.yaml), else ``./pipelines.yaml``, else ``SOURCE_URL``/``SINK_URL``/``TABLES``."""
    path = os.environ.get("DBMAZZ_PIPELINES")
    if path:
        return load_pipelines(path)
    if os.path.exists("pipelines.yaml"):
        return load_pipelines("pipelines.yaml")
    single = pipeline_from_env()
    if single is not None:
        return {single.name: single}
    raise ConfigError(
        "no pipeline configured: set DBMAZZ_PIPELINES to a pipelines.yaml, create ./pipelines.yaml, "
        "or set SOURCE_URL, SINK_URL and TABLES"
    )


def _pipeline_objects(pipeline: PipelineConfig):
    assets: list = [*build_source_specs(pipeline), build_changes_asset(pipeline)]
    assets += [build_sink_assets(pipeline, sink) for sink in pipeline.sinks]
    keys = [changes_key(pipeline.name)] + [sink_key(pipeline.name, s, t) for s in pipeline.sinks for t in pipeline.tables]
    job = dg.define_asset_job(
        job_name(pipeline.name),
        # checks run on their own schedule: a count(*) of a large source table per batch would cost more than the batch
        selection=dg.AssetSelection.assets(*keys).without_checks(),
        executor_def=dg.in_process_executor,
        tags={PIPELINE_TAG: pipeline.name},
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
    return assets, [job, checks_job, build_resync_job(pipeline)], schedule, build_capture_sensor(pipeline, job), build_sink_checks(pipeline)


def build_definitions(pipelines: dict[str, PipelineConfig]) -> dg.Definitions:
    assets, jobs, schedules, sensors, checks, resources = [], [], [], [], [], {}
    for pipeline in pipelines.values():
        pipeline_assets, pipeline_jobs, schedule, sensor, pipeline_checks = _pipeline_objects(pipeline)
        assets += pipeline_assets
        jobs += pipeline_jobs
        schedules.append(schedule)
        sensors.append(sensor)
        checks += pipeline_checks
        resources[resource_key(pipeline.name)] = DbmazzPipelineResource.for_pipeline(pipeline)
    return dg.Definitions(
        assets=assets, jobs=jobs, schedules=schedules, sensors=sensors, asset_checks=checks, resources=resources
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions(load_pipeline_configs())
