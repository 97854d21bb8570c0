"""Table names the configuration refuses, with the statement that fixes each: a name holding a dot (not
supported: every layer keys tables by ``schema.table``), and two tables one sink would merge into one."""

from __future__ import annotations

import re

import pytest
import yaml

from dbmazz_connectors.cli import main
from dbmazz_connectors.config import PipelineConfig, _validate
from dbmazz_connectors.core.errors import ConfigError


def _config(tables: list[str], sinks: dict) -> dict:
    return {
        "source": {"url": "postgresql://u@127.0.0.1:1/db", "password_env": "X"},
        "tables": tables,
        "sinks": sinks,
    }


def _check(tmp_path, capsys, body: dict) -> str:
    path = tmp_path / "pipelines.yaml"
    path.write_text(yaml.safe_dump({"pipelines": {"p1": body}}))
    assert main(["check", str(path)]) == 2
    return capsys.readouterr().err


@pytest.mark.parametrize("table", ['public."a.b"', "public.a.b"])
def test_a_dotted_table_name_is_refused_with_a_rename_that_runs(pg_db, mysql_db, tmp_path, capsys, table):
    with pg_db.connect() as conn:
        conn.execute('CREATE TABLE "a.b" (id int PRIMARY KEY)')
    err = _check(tmp_path, capsys, _config([table], {"duckdb": {"url": f"duckdb:///{tmp_path}/s.duckdb"}}))
    assert "schema and table names containing a dot are not supported" in err, err
    statement = re.search(r"PostgreSQL: (ALTER TABLE .*?);", err).group(1)
    assert statement == 'ALTER TABLE "public"."a.b" RENAME TO "a_b"'
    with pg_db.connect() as conn:
        conn.execute(statement)  # as printed
        assert conn.execute("SELECT to_regclass('public.a_b') IS NOT NULL").fetchone()[0]
    my = mysql_db.connect()
    with my.cursor() as cur:
        cur.execute("CREATE TABLE `a.b` (id INT PRIMARY KEY)")
    err = _check(tmp_path, capsys, _config([f"{mysql_db.name}.a.b"], {"duckdb": {}}))
    statement = re.search(r"MySQL: (RENAME TABLE .*?)\)", err).group(1)
    assert statement == f"RENAME TABLE `{mysql_db.name}`.`a.b` TO `{mysql_db.name}`.`a_b`"
    with my.cursor() as cur:
        cur.execute(statement)  # as printed
        cur.execute(f"SELECT COUNT(*) FROM `{mysql_db.name}`.`a_b`")
    my.close()
    PipelineConfig(name="p1", **_config(["public.a_b"], {"duckdb": {}}))  # the renamed table is accepted


@pytest.mark.parametrize(
    "sinks, where",
    [
        (
            {"clickhouse": {"url": "clickhouse://u@127.0.0.1:8123/db"}},
            "ClickHouse puts every table in the database",
        ),
        (
            {"pg": {"url": "postgresql://u@127.0.0.1:1/sink", "schema": "replica"}},
            "its 'schema: replica' puts every",
        ),
        ({"duckdb": {"schema": "all"}}, "its 'schema: all' puts every"),
    ],
)
def test_two_tables_one_sink_would_merge_are_refused_naming_both(sinks, where):
    with pytest.raises(ConfigError) as caught:
        _validate("p1", _config(["sales.orders", "public.t", "archive.orders"], sinks))
    message = str(caught.value)
    assert f"would write tables sales.orders and archive.orders into one table orders ({where}" in message, (
        message
    )
    assert "fix: replicate archive.orders in a pipeline of its own" in message


def test_tables_kept_apart_by_their_sinks_are_accepted():
    _validate(
        "p1",
        _config(
            ["sales.orders", "archive.orders"], {"postgres": {"url": "postgresql://u@h/sink"}, "duckdb": {}}
        ),
    )
    _validate(
        "p1",
        _config(
            ["public.Orders", "public.orders"],
            {"duckdb": {"schema": "all"}, "clickhouse": {"url": "clickhouse://u@h/db"}},
        ),
    )
