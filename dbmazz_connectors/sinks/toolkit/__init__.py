"""The sink toolkit: what every dbmazz sink needs, in one public place (docs/adding-connectors.md).

* ``SinkBase``: the exactly-once apply as a template method (skip applied batches, check schema changes and
  values before writing, alter/truncate/rows steps, record the batch) with hooks a sink implements;
* ``TypeMapper``: a sink's type table as data (native types, value rules for ``out_of_range``);
* ``parse_url`` / ``ConnectionUrl``: one parser for connection URLs (the password never shown);
* the planning pieces ``SinkBase`` uses, for sinks that implement the raw ``Sink`` protocol themselves:
  ``plan_batch`` (steps), ``reconcile_columns`` (the DDL a schema change needs), ``ValueGuard`` (the policy).
"""

from .._plan import (
    ColumnPlan,
    RowsStep,
    SchemaDiff,
    SchemaStep,
    Step,
    TruncateStep,
    diff_schemas,
    is_widening,
    plan_batch,
    reconcile_columns,
)
from .._policy import COUNTERS, OutOfRange, ValueGuard, ValueRule, temporal_rule, text_rule
from .base import ApplyContext, PlannedStep, SinkBase, SinkState, batch_high_water, merge_plans
from .types import TypeMapper
from .url import TRUE_WORDS, ConnectionUrl, flag, parse_url

__all__ = [
    "SinkBase",
    "SinkState",
    "ApplyContext",
    "PlannedStep",
    "merge_plans",
    "batch_high_water",
    "TypeMapper",
    "ConnectionUrl",
    "parse_url",
    "flag",
    "TRUE_WORDS",
    "ColumnPlan",
    "RowsStep",
    "SchemaStep",
    "TruncateStep",
    "Step",
    "SchemaDiff",
    "diff_schemas",
    "is_widening",
    "plan_batch",
    "reconcile_columns",
    "OutOfRange",
    "ValueGuard",
    "ValueRule",
    "temporal_rule",
    "text_rule",
    "COUNTERS",
]
