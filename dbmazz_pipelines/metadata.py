"""Dagster's standard table metadata for a pipeline's assets (``dagster/column_schema``, ``dagster/row_count``,
``dagster/table_name``, ``dagster/column_lineage``), from the source's schema and the sink's own catalog.

Source tables are external assets: a capture run records their schema (a materialization) when it changed.
Sink tables record theirs with every materialization: the columns the sink actually holds (its catalog,
dbmazz's ``_dbmazz_*`` bookkeeping columns included), the table's rows after the batch, and for each
replicated column the source column it comes from.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import dagster as dg

from dbmazz_connectors.core.schema import TableSchema

__all__ = [
    "source_column_schema",
    "SinkTable",
    "describe_sink_table",
    "sink_table_metadata",
    "source_schema_events",
    "BOOKKEEPING_PREFIX",
    "COLUMN_SCHEMA",
    "COLUMN_LINEAGE",
    "ROW_COUNT",
    "PARTITION_ROW_COUNT",
    "TABLE_NAME",
]

# Dagster's standard keys (the UI shows them on the asset's page, the catalog searches them)
COLUMN_SCHEMA = "dagster/column_schema"
COLUMN_LINEAGE = "dagster/column_lineage"
ROW_COUNT = "dagster/row_count"
PARTITION_ROW_COUNT = "dagster/partition_row_count"
TABLE_NAME = "dagster/table_name"

BOOKKEEPING_PREFIX = "_dbmazz"  # the sink columns dbmazz adds (version, commit time, deleted flag)


def source_column_schema(schema: TableSchema) -> dg.TableSchema:
    """The source table's columns: the source's own type names, the primary key (not null). Nothing is said
    of the other columns' nullability: sources report it for key columns only."""
    key = set(schema.primary_key)
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                c.name,
                type=c.source_type or str(c.type),
                description="primary key" if c.name in key else None,
                constraints=dg.TableColumnConstraints(nullable=False, unique=len(key) == 1)
                if c.name in key
                else None,
            )
            for c in schema.columns
        ]
    )


def source_schema_events(
    keys: Mapping[str, dg.AssetKey], schemas: Mapping[str, TableSchema], instance: dg.DagsterInstance
) -> list[dg.AssetMaterialization]:
    """A materialization of each source table whose column schema differs from the last one recorded (or none
    was): the source table, written by its applications, changed shape. Recorded as a materialization, not an
    observation, because the UI's *Columns* panel and column lineage read the latest materialization."""
    events = []
    for table, schema in schemas.items():
        key = keys.get(table)
        if key is None:
            continue
        columns = source_column_schema(schema)
        if _last_recorded_schema(instance, key) == columns:
            continue
        events.append(
            dg.AssetMaterialization(
                asset_key=key,
                description="the source table's columns as capture read them (recorded when they change)",
                metadata={COLUMN_SCHEMA: columns, TABLE_NAME: table, "dbmazz/table": table},
            )
        )
    return events


def _last_recorded_schema(instance: dg.DagsterInstance, key: dg.AssetKey) -> dg.TableSchema | None:
    event = instance.get_latest_materialization_event(key)
    if event is None or event.asset_materialization is None:
        return None
    value = event.asset_materialization.metadata.get(COLUMN_SCHEMA)
    return value.value if value is not None else None


@dataclass(frozen=True)
class SinkTable:
    """A replicated table as the sink holds it: its fully qualified name and its columns in order."""

    name: str
    columns: tuple[tuple[str, str, bool], ...]  # name, native type, nullable

    def column_schema(self, primary_key: Iterable[str] = ()) -> dg.TableSchema:
        key = set(primary_key)
        return dg.TableSchema(
            columns=[
                dg.TableColumn(
                    name,
                    type=native,
                    description=(
                        "dbmazz bookkeeping"
                        if name.startswith(BOOKKEEPING_PREFIX)
                        else "primary key"
                        if name in key
                        else None
                    ),
                    constraints=dg.TableColumnConstraints(nullable=nullable),
                )
                for name, native, nullable in self.columns
            ]
        )


def describe_sink_table(sink, table: str) -> SinkTable | None:
    """The sink table holding ``table`` and its columns, read from the sink's catalog; None when the sink
    has not created it yet or does not say where it keeps it.

    Works with the sinks that keep a per-table state (``table_state``): the SQL sinks (DuckDB,
    PostgreSQL: ``information_schema``) and ClickHouse (``system.columns``)."""
    state_of = getattr(sink, "table_state", None)
    state = state_of(table) if state_of is not None else None
    if state is None:
        return None
    if hasattr(state, "target_schema") and hasattr(sink, "fetchall"):
        database = sink.fetchall("SELECT current_database()")[0][0]
        rows = sink.fetchall(
            "SELECT column_name, data_type, is_nullable FROM information_schema.columns "
            "WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
            (state.target_schema, state.target_name),
        )
        columns = tuple(
            (name, str(native), str(nullable).upper() == "YES") for name, native, nullable in rows
        )
        return SinkTable(f"{database}.{state.target_schema}.{state.target_name}", columns)
    if hasattr(state, "target") and hasattr(sink, "query_rows"):
        database = sink.query_rows("SELECT currentDatabase()")[0][0]
        rows = sink.query_rows(
            "SELECT name, type FROM system.columns WHERE database = currentDatabase() "
            "AND table = %(t)s ORDER BY position",
            {"t": state.target},
        )
        columns = tuple((name, str(native), str(native).startswith("Nullable(")) for name, native in rows)
        return SinkTable(f"{database}.{state.target}", columns)
    return None


def sink_table_metadata(
    described: SinkTable | None,
    row_count: int | None,
    source_key: dg.AssetKey,
    source_schema: TableSchema | None,
) -> dict[str, object]:
    """``dagster/table_name``, ``dagster/column_schema``, ``dagster/row_count`` and ``dagster/column_lineage``
    (each replicated column from the source column of the same name) of one sink table."""
    metadata: dict[str, object] = {}
    if row_count is not None:
        metadata[ROW_COUNT] = row_count
    if described is None:
        return metadata
    source_columns = set(source_schema.column_names) if source_schema is not None else None
    replicated = [
        name
        for name, _, _ in described.columns
        if not name.startswith(BOOKKEEPING_PREFIX) and (source_columns is None or name in source_columns)
    ]
    lineage = dg.TableColumnLineage(
        {name: [dg.TableColumnDep(asset_key=source_key, column_name=name)] for name in replicated}
    )
    key = source_schema.primary_key if source_schema is not None else ()
    metadata.update(
        {TABLE_NAME: described.name, COLUMN_SCHEMA: described.column_schema(key), COLUMN_LINEAGE: lineage}
    )
    return metadata
