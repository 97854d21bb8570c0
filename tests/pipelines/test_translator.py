"""A subclassed DbmazzTranslator chooses keys, groups, owners and tags; the pipeline loads and runs under them.
The pipeline's resource holds typed config whose secrets are EnvVars."""

import dagster as dg
import pytest

from dbmazz_connectors.config import PipelineConfig
from dbmazz_connectors.core import ConfigError
from dbmazz_pipelines import AssetRole, DbmazzAssetData, DbmazzTranslator, build_definitions
from dbmazz_pipelines.naming import job_name
from dbmazz_pipelines.resources import DbmazzPipelineResource

from ._harness import churn, make_shop_pipeline, start_shop


class WarehouseTranslator(DbmazzTranslator):
    def get_asset_spec(self, data: DbmazzAssetData) -> dg.AssetSpec:
        spec = super().get_asset_spec(data)
        if data.role is AssetRole.SINK_TABLE:
            return spec.replace_attributes(
                key=dg.AssetKey(["warehouse", data.sink, data.table_name]),
                group_name="warehouse",
                owners=["team:analytics"],
            )
        if data.role is AssetRole.SOURCE_TABLE:
            return spec.replace_attributes(key=dg.AssetKey(["oltp", data.table_name]), group_name="oltp")
        return spec.replace_attributes(group_name="cdc", tags={**spec.tags, "tier": "bronze"})


def test_a_subclassed_translator_changes_keys_and_groups_and_the_pipeline_still_runs(
    pg_db, tmp_path, monkeypatch
):
    shop = make_shop_pipeline(pg_db, tmp_path, monkeypatch)
    defs = build_definitions({shop.name: shop.config}, translator=WarehouseTranslator())
    graph = defs.get_repository_def().asset_graph
    orders = graph.get(dg.AssetKey(["warehouse", "duckdb", "orders"]))
    assert orders.group_name == "warehouse" and orders.owners == ["team:analytics"]
    assert [k.path for k in orders.parent_keys] == [["shop", "changes"]]
    changes = graph.get(dg.AssetKey(["shop", "changes"]))
    assert changes.group_name == "cdc" and changes.tags["tier"] == "bronze"
    assert {k.path[-1] for k in changes.parent_keys} == {"orders", "customers"}
    assert not graph.has(dg.AssetKey(["shop", "duckdb", "public.orders"]))
    with dg.instance_for_test() as instance:
        start_shop(shop, defs, instance)
        churn(pg_db.url, 4)
        request = shop.tick(defs, instance).run_requests[0]
        assert shop.run_batch(defs, instance, request.partition_key).success
        for table in ("public.orders", "public.customers"):
            assert shop.sink_rows(table) == shop.source_rows(table)
        applied = instance.get_materialized_partitions(dg.AssetKey(["warehouse", "duckdb", "orders"]))
        assert request.partition_key in applied
        lineage = instance.get_latest_materialization_event(dg.AssetKey(["warehouse", "duckdb", "orders"]))
        deps = lineage.asset_materialization.metadata["dagster/column_lineage"].value.deps_by_column["amount"]
        assert deps[0].asset_key == dg.AssetKey(["oltp", "orders"])
        checks = defs.resolve_job_def(f"{shop.name}_checks").execute_in_process(instance=instance)
        parity = {
            e.asset_key: e for e in checks.get_asset_check_evaluations() if e.check_name == "row_count_parity"
        }
        assert parity[dg.AssetKey(["warehouse", "duckdb", "orders"])].passed


class CollidingTranslator(DbmazzTranslator):
    def get_asset_spec(self, data: DbmazzAssetData) -> dg.AssetSpec:
        spec = super().get_asset_spec(data)
        if data.role is AssetRole.SINK_TABLE:
            return spec.replace_attributes(
                key=dg.AssetKey(["warehouse", data.sink])
            )  # the table is forgotten
        return spec


def _config(tmp_path) -> PipelineConfig:
    return PipelineConfig(
        name="p",
        source={"url": "postgresql://cap@db/shop", "password_env": "SHOP_PW"},
        tables=["public.a", "public.b"],
        sinks={"duckdb": {"url": f"duckdb:///{tmp_path}/x.duckdb"}},
        changelog=str(tmp_path / "changelog"),
    )


def test_a_translator_giving_two_tables_one_key_is_refused_with_the_reason(tmp_path):
    defs = build_definitions({"p": _config(tmp_path)}, translator=CollidingTranslator())
    repo = defs.get_repository_def()
    assert not repo.has_job(job_name("p"))
    sensor = repo.get_sensor_def("p_capture")
    with dg.instance_for_test() as instance, dg.build_sensor_context(instance=instance) as context:
        with pytest.raises(ConfigError, match="same asset key warehouse/duckdb") as error:
            sensor.evaluate_tick(context)
    assert "sink table public.a of sink duckdb and the sink table public.b" in str(error.value)


def test_the_resource_is_typed_and_keeps_secrets_as_env_vars(tmp_path):
    config = _config(tmp_path).model_copy(
        update={
            "sinks": {"duckdb": {"url": f"duckdb:///{tmp_path}/x.duckdb"}, "clickhouse": {"url": "${CH_URL}"}}
        }
    )
    resource = build_definitions({"p": config}).resources["dbmazz_p"]
    assert isinstance(resource, DbmazzPipelineResource)
    assert resource.source.url == "postgresql://cap@db/shop" and resource.tables == ["public.a", "public.b"]
    assert (
        isinstance(resource.source.password, dg.EnvVar) and resource.source.password.env_var_name == "SHOP_PW"
    )
    assert isinstance(resource.sinks["clickhouse"].url, dg.EnvVar)  # a whole url from the environment
    assert resource.changelog.root == str(tmp_path / "changelog")
    fields = DbmazzPipelineResource.model_fields
    assert all(fields[name].description for name in ("source", "tables", "sinks", "changelog"))
