"""Dagster's standard table metadata, read back from the instance's event log after real batches: the source
tables' column schema, and each sink table's columns, row count, name and column lineage."""

import dagster as dg
import duckdb
import psycopg

from dbmazz_pipelines.naming import changes_key, sink_key, source_key

from ._harness import churn, make_shop_pipeline, start_shop

TABLES = ("public.orders", "public.customers")


def _source_columns(url: str, table: str) -> list[tuple[str, str, bool]]:
    """The source's columns: name, PostgreSQL's own type name (int8, text, jsonb), nullable."""
    with psycopg.connect(url) as conn:
        return [
            (name, kind, nullable == "YES")
            for name, kind, nullable in conn.execute(
                "SELECT column_name, udt_name, is_nullable FROM information_schema.columns "
                "WHERE table_schema || '.' || table_name = %s ORDER BY ordinal_position",
                (table,),
            ).fetchall()
        ]


def _sink_columns(path, table: str) -> list[tuple[str, str]]:
    schema, name = table.split(".")
    with duckdb.connect(str(path), read_only=True) as conn:
        return conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position",
            [schema, name],
        ).fetchall()


def test_sink_and_source_tables_carry_dagsters_table_metadata(pg_db, tmp_path, monkeypatch):
    shop = make_shop_pipeline(pg_db, tmp_path, monkeypatch)
    defs = shop.definitions()
    with dg.instance_for_test() as instance:
        start_shop(shop, defs, instance)
        churn(pg_db.url, 3)
        request = shop.tick(defs, instance).run_requests[0]
        assert shop.run_batch(defs, instance, request.partition_key).success

        changes = instance.get_latest_materialization_event(changes_key(shop.name)).asset_materialization
        assert changes.partition == request.partition_key
        assert changes.metadata["dagster/partition_row_count"].value == changes.metadata["rows"].value > 0

        for table in TABLES:
            source_rows = shop.source_rows(table)
            assert shop.sink_rows(table) == source_rows
            event = instance.get_latest_materialization_event(sink_key(shop.name, "duckdb", table))
            metadata = event.asset_materialization.metadata
            assert event.asset_materialization.partition == request.partition_key
            assert metadata["dagster/row_count"].value == len(source_rows)
            assert metadata["dagster/table_name"].value == f"shop.{table}"  # the DuckDB file shop.duckdb
            sink_columns = _sink_columns(shop.duckdb_path, table)
            schema = metadata["dagster/column_schema"].schema
            assert [(c.name, c.type) for c in schema.columns] == sink_columns
            source_columns = [name for name, _, _ in _source_columns(pg_db.url, table)]
            assert [c for c, _ in sink_columns if not c.startswith("_dbmazz")] == source_columns
            lineage = metadata["dagster/column_lineage"].value.deps_by_column
            assert set(lineage) == set(source_columns)
            for column, deps in lineage.items():
                assert [(d.asset_key, d.column_name) for d in deps] == [
                    (source_key(shop.name, table), column)
                ]

            recorded = instance.fetch_materializations(source_key(shop.name, table), limit=10).records
            assert len(recorded) == 1, (
                f"source table {table}: its unchanged schema is recorded once, not per batch"
            )
            source_schema = recorded[0].asset_materialization.metadata["dagster/column_schema"].schema
            assert [(c.name, c.type) for c in source_schema.columns] == [
                (name, kind) for name, kind, _ in _source_columns(pg_db.url, table)
            ]
            key = source_schema.columns[0]
            assert key.name == "id" and not key.constraints.nullable and key.description == "primary key"
            assert recorded[0].asset_materialization.metadata["dagster/table_name"].value == table
