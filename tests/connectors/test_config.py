"""Pipeline configuration: validated with clear errors, secrets only from the environment."""

import pytest

from dbmazz_connectors.config import load_pipelines, pipeline_from_env
from dbmazz_connectors.core import ConfigError


def _write(tmp_path, text: str) -> str:
    path = tmp_path / "pipelines.yaml"
    path.write_text(text)
    return str(path)


def test_yaml_pipeline_resolves_secrets_from_the_environment(tmp_path, monkeypatch):
    path = _write(
        tmp_path,
        """
pipelines:
  shop:
    source: {url: "postgresql://cap@db:5432/shop", password_env: SHOP_PW}
    tables: [public.orders]
    sinks:
      duckdb: {url: "duckdb:///x.duckdb"}
      ch: {url: "clickhouse://u:${CH_PW}@ch:8123/shop"}
""",
    )
    monkeypatch.setenv("SHOP_PW", "s3cret")
    monkeypatch.setenv("CH_PW", "other")
    shop = load_pipelines(path)["shop"]
    assert shop.source_config() == {
        "url": "postgresql://cap@db:5432/shop",
        "password": "s3cret",
        "pipeline": "shop",
        "tables": ["public.orders"],
    }
    assert shop.sink_config("ch")["url"] == "clickhouse://u:other@ch:8123/shop"
    assert "s3cret" not in shop.model_dump_json()  # what Dagster stores never holds the secret
    monkeypatch.delenv("SHOP_PW")
    with pytest.raises(ConfigError, match="expected environment variable SHOP_PW"):
        shop.source_config()


@pytest.mark.parametrize(
    "body,message",
    [
        ("pipelines: {}", "expected a 'pipelines:' mapping"),
        (
            "pipelines:\n  bad-name: {source: {}, tables: [a.b], sinks: {d: {}}}",
            "letters, digits and underscores",
        ),
        (
            "pipelines:\n  p: {source: {}, tables: [orders], sinks: {d: {}}}",
            "expected tables as schema.table, got 'orders'",
        ),
        ("pipelines:\n  p: {source: {}, tables: [a.b], sinks: {}}", "sinks"),
        ("pipelines:\n  p: {source: {}, tables: [a.b], sinks: {d: {}}, typo: 1}", "typo"),
        ("pipelines: [", "not valid YAML"),
    ],
)
def test_invalid_files_say_what_is_wrong(tmp_path, body, message):
    with pytest.raises(ConfigError, match=message):
        load_pipelines(_write(tmp_path, body))


def test_single_pipeline_from_environment_variables():
    env = {
        "SOURCE_URL": "mysql://repl@db/shop",
        "SINK_URL": "duckdb:///a.duckdb,ch=clickhouse://u@ch/shop",
        "TABLES": "shop.orders, shop.items",
        "PIPELINE_NAME": "shop",
    }
    pipeline = pipeline_from_env(env)
    assert pipeline.name == "shop" and pipeline.tables == ["shop.orders", "shop.items"]
    assert set(pipeline.sinks) == {"duckdb", "ch"}
    assert pipeline.source == {"url": "${SOURCE_URL}"}  # the URL (and its password) stays in the environment
    assert pipeline.source_config(env)["url"] == "mysql://repl@db/shop"
    assert pipeline_from_env({}) is None
    with pytest.raises(ConfigError, match="SINK_URL and TABLES must be too"):
        pipeline_from_env({"SOURCE_URL": "mysql://x@db/shop"})
