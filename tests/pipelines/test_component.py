"""A pipeline as a dg component: scaffolded into a project's defs folder, loaded, and run against PostgreSQL."""

import dagster as dg
import pytest
import yaml
from dagster.components.testing import create_defs_folder_sandbox

from dbmazz_connectors.core import ConfigError
from dbmazz_pipelines import DbmazzPipelineComponent

from ._harness import churn, make_shop_pipeline, start_shop


def test_a_scaffolded_component_loads_and_replicates_a_batch(pg_db, tmp_path, monkeypatch):
    shop = make_shop_pipeline(pg_db, tmp_path, monkeypatch)  # the shop database, a capture role, its password
    with create_defs_folder_sandbox() as sandbox:
        path = sandbox.scaffold_component(
            DbmazzPipelineComponent,
            defs_path="shop",
            scaffold_params={
                "source_url": shop.config.source["url"],
                "password_env": "TEST_SHOP_PASSWORD",
                "tables": ",".join(shop.config.tables),
                "sink_url": f"duckdb:///{shop.duckdb_path}",
            },
        )
        written = (path / "defs.yaml").read_text()
        assert "{{ env.TEST_SHOP_PASSWORD }}" in written
        document = yaml.safe_load(
            written
        )  # what a user fills in after scaffolding: a slot, a change log folder
        assert document["type"].endswith(".DbmazzPipelineComponent")
        document["type"] = "dbmazz_pipelines.DbmazzPipelineComponent"  # the name the docs use
        document["attributes"]["source"]["slot"] = shop.config.source["slot"]
        document["attributes"]["changelog"] = shop.config.changelog
        document["attributes"]["run_mode"] = "batch"  # the test runs the sensor's batch runs one by one
        (path / "defs.yaml").write_text(yaml.safe_dump(document))

        with sandbox.load_component_and_build_defs(defs_path=path) as (component, defs):
            assert isinstance(component, DbmazzPipelineComponent)
            resource = defs.resources["dbmazz_shop"]
            assert isinstance(resource.source.password, dg.EnvVar)  # never the password itself
            assert resource.source.password.env_var_name == "TEST_SHOP_PASSWORD"
            with dg.instance_for_test() as instance:
                start_shop(shop, defs, instance)  # the sensor sets the source up; the initial load runs
                churn(pg_db.url, 11)
                request = shop.tick(defs, instance).run_requests[0]
                assert shop.run_batch(defs, instance, request.partition_key).success
                for table in shop.config.tables:
                    assert shop.sink_rows(table) == shop.source_rows(table), table
                applied = instance.get_materialized_partitions(
                    dg.AssetKey(["shop", "duckdb", "public.orders"])
                )
                assert request.partition_key in applied


def test_a_component_with_a_password_in_clear_is_refused_naming_its_file(tmp_path, monkeypatch):
    monkeypatch.setenv("LEAKED", "hunter2")
    with create_defs_folder_sandbox() as sandbox:
        path = sandbox.scaffold_component(
            DbmazzPipelineComponent,
            defs_path="leaky",
            defs_yaml_contents={
                "type": "dbmazz_pipelines.DbmazzPipelineComponent",
                "attributes": {
                    "source": {"url": "postgresql://cap:{{ env.LEAKED }}@db/shop", "password": "hunter2"},
                    "tables": ["public.orders"],
                    "sinks": {"duckdb": {"url": "duckdb:///x.duckdb"}},
                },
            },
        )
        with pytest.raises(Exception) as error:
            with sandbox.load_component_and_build_defs(defs_path=path):
                pass
    cause = error.value
    while not isinstance(cause, ConfigError) and cause.__cause__ is not None:
        cause = cause.__cause__
    assert isinstance(cause, ConfigError), repr(error.value)
    assert "leaky/defs.yaml" in str(cause) and "password in clear" in str(cause)
    assert "hunter2" not in str(error.value)


def test_the_component_translation_sets_keys_groups_and_owners_from_yaml():
    with create_defs_folder_sandbox() as sandbox:
        path = sandbox.scaffold_component(
            DbmazzPipelineComponent,
            defs_path="shop",
            defs_yaml_contents={
                "type": "dbmazz_pipelines.DbmazzPipelineComponent",
                "attributes": {
                    "source": {"url": "postgresql://cap@db/shop", "password": "{{ env.SHOP_PG_PASSWORD }}"},
                    "tables": ["public.orders"],
                    "sinks": {"duckdb": {"url": "duckdb:///shop.duckdb"}},
                    "translation": {
                        "key": "{{ role }}/{{ table_name or 'all' }}",
                        "owners": ["team:data"],
                        "group_name": "{{ pipeline }}_{{ 'warehouse' if role == 'sink_table' else 'cdc' }}",
                    },
                },
            },
        )
        with sandbox.load_component_and_build_defs(defs_path=path) as (_, defs):
            graph = defs.get_repository_def().asset_graph
            specs = {k.to_user_string(): graph.get(k) for k in graph.get_all_asset_keys()}
            assert set(specs) == {"source_table/orders", "changes/all", "sink_table/orders"}
            assert specs["sink_table/orders"].group_name == "shop_warehouse"
            assert specs["changes/all"].group_name == "shop_cdc"
            assert all(s.owners == ["team:data"] for s in specs.values())
            assert [k.to_user_string() for k in specs["sink_table/orders"].parent_keys] == ["changes/all"]
