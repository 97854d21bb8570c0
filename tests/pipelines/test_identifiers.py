"""Any table name PostgreSQL accepts loads in Dagster and replicates; a broken pipeline leaves the others loaded."""

from __future__ import annotations

import re
import secrets

import dagster as dg
import duckdb
import psycopg
import pytest
import yaml
from psycopg import sql

from dbmazz_connectors.config import PipelineConfig, load_pipelines_each, pipeline_from_env
from dbmazz_connectors.core import create_sink
from dbmazz_pipelines.definitions import build_definitions
from dbmazz_pipelines.naming import (
    job_name,
    sensor_name,
    sink_key,
    source_key,
    table_identifier,
    table_key_part,
)

from ._harness import ShopPipeline

LONG = "l" * 40 + "-" + "x" * 22  # 63 bytes, PostgreSQL's longest name
HOSTILE = ["my table", 'quo"te', "dash-name", "ünïcödé", "select", LONG, "a_b"]
REPLICATED = [f"public.{name}" for name in HOSTILE] + ["odd-schema.t", "public_a.b"]
CASES = ["public.Case", "public.case"]  # DuckDB ignores identifiers' case: the second gets a suffixed table
TABLES = REPLICATED + CASES


def _ident(table: str) -> sql.Composable:
    schema, name = table.split(".", 1)
    return sql.Identifier(schema, name)


def _create_tables(url: str, tables: list[str]) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute('CREATE SCHEMA "odd-schema"; CREATE SCHEMA public_a')
        for table in tables:
            conn.execute(
                sql.SQL('CREATE TABLE {} (id int PRIMARY KEY, "v a l" text, "order" int)').format(
                    _ident(table)
                )
            )


def _write(url: str, tables: list[str], round_: int) -> None:
    """Each table gets its own rows: inserts, then an update and a delete from the second round on."""
    with psycopg.connect(url, autocommit=True) as conn:
        for n, table in enumerate(tables):
            rows = [(round_ * 10 + i, f"{table} {round_}/{i} ✓", n) for i in range(3)]
            conn.cursor().executemany(
                sql.SQL("INSERT INTO {} VALUES (%s, %s, %s)").format(_ident(table)), rows
            )
            if round_:
                conn.execute(
                    sql.SQL('UPDATE {} SET "v a l" = %s WHERE id = %s').format(_ident(table)), ("upd", 0)
                )
                conn.execute(sql.SQL("DELETE FROM {} WHERE id = %s").format(_ident(table)), (1,))


def _source_rows(url: str, table: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            sql.SQL('SELECT id, "v a l", "order" FROM {} ORDER BY id').format(_ident(table))
        ).fetchall()


def _sink_rows(path, table: str) -> list[tuple]:
    """The rows of the DuckDB table that ``table`` went to (its name from the sink's ``_dbmazz.tables``)."""
    with duckdb.connect(str(path), read_only=True) as conn:
        schema, name = conn.execute(
            "SELECT target_schema, target_name FROM _dbmazz.tables WHERE table_name = ?", [table]
        ).fetchone()
        quoted = ".".join('"' + part.replace('"', '""') + '"' for part in (schema, name))
        return conn.execute(f'SELECT id, "v a l", "order" FROM {quoted} ORDER BY id').fetchall()


def _hostile_pipeline(
    pg_db, tmp_path, monkeypatch, tables: list[str], sinks: dict | None = None
) -> ShopPipeline:
    _create_tables(pg_db.url, tables)
    role, password = f"cap_{pg_db.name}", secrets.token_hex(8)
    with psycopg.connect(pg_db.url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN REPLICATION PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(password)
            )
        )
        listed = sql.SQL(", ").join(_ident(t) for t in tables)
        conn.execute(sql.SQL("GRANT SELECT ON {} TO {}").format(listed, sql.Identifier(role)))
        conn.execute(
            sql.SQL('GRANT USAGE ON SCHEMA "odd-schema", public_a TO {}').format(sql.Identifier(role))
        )
        conn.execute(
            sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(
                sql.Identifier(pg_db.name), sql.Identifier(role)
            )
        )
        conn.execute(sql.SQL("CREATE PUBLICATION dbmazz_odd FOR TABLE {}").format(listed))
        conn.execute(sql.SQL("ALTER PUBLICATION dbmazz_odd OWNER TO {}").format(sql.Identifier(role)))
    monkeypatch.setenv("TEST_ODD_PASSWORD", password)
    path = tmp_path / "odd.duckdb"
    config = PipelineConfig(
        name="odd",
        source={
            "url": f"postgresql://{role}@127.0.0.1:{pg_db.server.port}/{pg_db.name}",
            "password_env": "TEST_ODD_PASSWORD",
            "slot": f"dbmazz_{pg_db.name}",
        },
        tables=tables,
        sinks={"duckdb": {"url": f"duckdb:///{path}", "lock_wait_seconds": 2}, **(sinks or {})},
        changelog=str(tmp_path / "changelog"),
    )
    return ShopPipeline(config, pg_db.url, path)


def test_names_are_valid_unique_and_stable():
    parts = [table_key_part(t) for t in TABLES]
    idents = [table_identifier(t) for t in TABLES]
    assert len(set(parts)) == len(TABLES) and len(set(idents)) == len(TABLES)
    assert len({i.lower() for i in idents}) == len(TABLES), "op names unique even where case is ignored"
    assert all(dg.AssetKey(["p", p]).to_python_identifier().replace("_", "").isalnum() for p in parts)
    assert table_key_part("public.orders") == "public.orders"  # plain names keep their keys
    # the same name maps to the same key in every process and release
    assert table_key_part("public.my table") == "public.my_table_c3d30fae"
    assert table_identifier("public.a_b") != table_identifier("public_a.b")


@pytest.mark.parametrize("tables", [REPLICATED, CASES], ids=["hostile", "case-only"])
def test_hostile_table_names_load_and_replicate_into_duckdb(pg_db, tmp_path, monkeypatch, tables):
    odd = _hostile_pipeline(pg_db, tmp_path, monkeypatch, tables)
    defs = build_definitions({"odd": odd.config})
    repo = defs.get_repository_def()
    assert repo.has_job(job_name("odd")) and repo.has_sensor_def(sensor_name("odd"))
    first = tables[0]
    node = defs.resolve_assets_def(sink_key("odd", "duckdb", first))
    spec = next(s for s in node.specs if s.key == sink_key("odd", "duckdb", first))
    assert spec.metadata["dbmazz/table"] == first and first in spec.description
    assert defs.resolve_assets_def(source_key("odd", first)) is not None
    _write(pg_db.url, tables, 0)
    with dg.instance_for_test() as instance:
        launched = odd.drive(defs, instance)  # set up, initial load
        assert launched and all(run.success for run in launched), launched
        _write(pg_db.url, tables, 1)
        launched = odd.drive(defs, instance)  # live changes
        assert launched and all(run.success for run in launched), launched
        for table in tables:
            assert _sink_rows(odd.duckdb_path, table) == _source_rows(pg_db.url, table), table
        event = instance.get_latest_materialization_event(sink_key("odd", "duckdb", tables[-1]))
        assert event.asset_materialization.metadata["dbmazz/table"].value == tables[-1]


def _good_config(tmp_path) -> PipelineConfig:
    return PipelineConfig(
        name="good",
        source={"url": "postgresql://u@127.0.0.1:1/db", "password_env": "X"},
        tables=["public.t"],
        sinks={"duckdb": {"url": f"duckdb:///{tmp_path}/g.duckdb"}},
        changelog=str(tmp_path / "changelog"),
    )


def test_a_pipeline_from_environment_variables_loads(tmp_path):
    single = pipeline_from_env(
        {
            "SOURCE_URL": "postgresql://u:pw@h/db",
            "SINK_URL": f"duckdb:///{tmp_path}/x.duckdb",
            "TABLES": "public.my table",
        }
    )
    repo = build_definitions({single.name: single}).get_repository_def()
    assert repo.has_job(job_name("main")) and repo.has_sensor_def(sensor_name("main"))


@pytest.mark.parametrize(
    "broken, reason",
    [
        (
            {
                "source": {"url": "postgresql://u@h/db"},
                "tables": ["public.t"],
                "sinks": {"d": {"url": "duckdbx:///x"}},
            },
            "a url with a known scheme .* for the sink d, got 'duckdbx'",
        ),
        (
            {
                "source": {"url": "postgresql://u:hunter2@h/db"},
                "tables": ["public.t"],
                "sinks": {"duckdb": {}},
            },
            "holds a password in clear",
        ),
        (
            {"source": {"url": "postgresql://u@h/db"}, "tables": ["t"], "sinks": {"duckdb": {}}},
            "expected tables as schema.table",
        ),
        (
            {
                "source": {"url": "postgresql://u@h/db"},
                "tables": ["public.a b", "public.a_b_d6c3ae2c"],
                "sinks": {"duckdb": {}},
            },
            None,
        ),
    ],
)
def test_a_broken_pipeline_does_not_stop_the_others_from_loading(tmp_path, broken, reason):
    path = tmp_path / "pipelines.yaml"
    good = _good_config(tmp_path).model_dump(exclude={"name"})
    path.write_text(yaml.safe_dump({"pipelines": {"good": good, "bad_one": broken}}))
    defs = build_definitions(load_pipelines_each(str(path)))
    repo = defs.get_repository_def()
    assert repo.has_job(job_name("good")) and repo.has_sensor_def(sensor_name("good"))
    if reason is None:  # loads as a normal pipeline
        assert all(
            len(set(s.key for s in a.specs)) for a in defs.assets if isinstance(a, dg.AssetsDefinition)
        )
        return
    broken_sensors = [
        s for s in repo.sensor_defs if s.name.startswith("bad_one") and s.name.endswith("_capture")
    ]
    assert len(broken_sensors) == 1
    with dg.instance_for_test() as instance, dg.build_sensor_context(instance=instance) as context:
        with pytest.raises(Exception, match=reason) as caught:
            broken_sensors[0].evaluate_tick(context)
    assert "hunter2" not in str(caught.value) and "pipeline bad_one is not loaded" in str(caught.value)
    described = [a for a in defs.assets if isinstance(a, dg.AssetSpec) and a.key.path[-1] == "configuration"]
    assert re.search(reason, described[0].description)


def _read_back(sink, table: str) -> list[tuple]:
    """A sink's live rows of ``table``, read the way its README says to query them."""
    columns = ", ".join(sink.q(c) for c in ("id", "v a l", "order"))
    if sink.name == "clickhouse":
        data = sink.client.query_arrow(
            f"SELECT {columns} FROM {sink.q(sink.target_name(table) + '_current')} ORDER BY id"
        )
        return [tuple(row.values()) for row in data.to_pylist()]
    return [
        tuple(r)
        for r in sink.fetchall(f"SELECT {columns} FROM {sink.target(sink.table_state(table))} ORDER BY id")
    ]


@pytest.mark.slow
def test_hostile_table_names_replicate_into_every_sink(pg_db, ch_db, tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_PG_SINK_URL", pg_db.sink_url)  # referenced, never written in the config
    monkeypatch.setenv("TEST_CH_SINK_URL", ch_db.url)
    sinks = {
        "postgres": {"url": "${TEST_PG_SINK_URL}", "schema": "replica"},
        "clickhouse": {"url": "${TEST_CH_SINK_URL}"},
    }
    odd = _hostile_pipeline(pg_db, tmp_path, monkeypatch, REPLICATED, sinks)
    defs = build_definitions({"odd": odd.config})
    assert defs.get_repository_def().has_job(job_name("odd"))
    _write(pg_db.url, REPLICATED, 0)
    with dg.instance_for_test() as instance:
        assert all(run.success for run in odd.drive(defs, instance))
        _write(pg_db.url, REPLICATED, 1)
        assert all(run.success for run in odd.drive(defs, instance))
    for name in ("postgres", "clickhouse"):
        sink = create_sink(odd.config.sink_config(name))
        sink.connect()
        try:
            for table in REPLICATED:
                assert _read_back(sink, table) == _source_rows(pg_db.url, table), (name, table)
        finally:
            sink.disconnect()
