"""Dagster orchestration for dbmazz: pipelines from configuration, sensors, partitioned assets, checks."""

from .definitions import build_definitions, load_pipeline_configs

__all__ = ["build_definitions", "load_pipeline_configs"]
