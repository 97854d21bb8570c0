"""The pipelines of ``$DBMAZZ_PIPELINES``, ``./pipelines.yaml`` or ``SOURCE_URL``/``SINK_URL``/``TABLES``, when one
is configured: built by the same code as the components beside this file."""

import dagster as dg

from dbmazz_pipelines.definitions import configured_definitions


@dg.definitions
def pipelines() -> dg.Definitions:
    return configured_definitions()
