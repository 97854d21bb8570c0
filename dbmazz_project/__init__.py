"""This repository as a dg project: ``dg dev``, ``dg list defs``, ``dg check defs``, ``dg scaffold defs``.

Pipelines are ``defs.yaml`` files of ``DbmazzPipelineComponent`` under ``dbmazz_project/defs/`` (scaffold one
with ``dg scaffold defs dbmazz_pipelines.DbmazzPipelineComponent <name>``), plus the pipelines of
``pipelines.yaml`` or the environment when one is configured (``defs/configured.py``). Not part of the
installed package: a deployment has its own dg project and installs ``dbmazz[dagster]``.
"""
