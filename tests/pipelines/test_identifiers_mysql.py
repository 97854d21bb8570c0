"""Hostile MariaDB table names through Dagster: the pipeline loads, and DuckDB equals the source row by row."""

from __future__ import annotations

import dagster as dg
import duckdb
import pymysql

from dbmazz_connectors.config import PipelineConfig
from tests.connectors.sources.mysql.conftest import create_replication_user

from ._harness import ShopPipeline

NAMES = ["my table", "o`r", "ünïcödé", "select", "dash-name", "Mixed"]


def _q(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _write(admin, database: str, round_: int) -> None:
    with admin.cursor() as cur:
        for name in NAMES:
            table = f"{_q(database)}.{_q(name)}"
            cur.executemany(
                f"INSERT INTO {table} VALUES (%s, %s)",
                [(round_ * 10 + i, f"{name} {round_} ✓") for i in range(3)],
            )
            if round_:
                cur.execute(f"UPDATE {table} SET `v a l` = 'upd' WHERE id = 0")
                cur.execute(f"DELETE FROM {table} WHERE id = 1")


def _source_rows(admin, database: str, name: str) -> list[tuple]:
    with admin.cursor() as cur:
        cur.execute(f"SELECT id, `v a l` FROM {_q(database)}.{_q(name)} ORDER BY id")
        return [tuple(r) for r in cur.fetchall()]


def _sink_rows(path, database: str, name: str) -> list[tuple]:
    quoted = ".".join('"' + p.replace('"', '""') + '"' for p in (database, name))
    with duckdb.connect(str(path), read_only=True) as conn:
        return conn.execute(f'SELECT id, "v a l" FROM {quoted} ORDER BY id').fetchall()


def test_hostile_mariadb_table_names_replicate_through_dagster(mysql_db, tmp_path, monkeypatch):
    admin = pymysql.connect(**mysql_db.server.connect_kwargs())
    with admin.cursor() as cur:
        cur.execute(
            "SET GLOBAL binlog_row_metadata = 'FULL'"
        )  # the documented requirement (the suite's setting)
        for name in NAMES:
            cur.execute(
                f"CREATE TABLE {_q(mysql_db.name)}.{_q(name)} (id INT PRIMARY KEY, `v a l` VARCHAR(40))"
            )
    user, password = create_replication_user(admin, mysql_db.name)
    monkeypatch.setenv("TEST_ODD_MY_PASSWORD", password)
    path = tmp_path / "odd.duckdb"
    config = PipelineConfig(
        name="odd_my",
        source={"url": mysql_db.server.url("", user=user), "password_env": "TEST_ODD_MY_PASSWORD"},
        tables=[f"{mysql_db.name}.{name}" for name in NAMES],
        sinks={"duckdb": {"url": f"duckdb:///{path}", "lock_wait_seconds": 2}},
        changelog=str(tmp_path / "changelog"),
    )
    odd = ShopPipeline(config, "", path)
    defs = odd.definitions()
    try:
        _write(admin, mysql_db.name, 0)
        with dg.instance_for_test() as instance:
            launched = odd.drive(defs, instance)  # set up, initial load
            assert launched and all(run.success for run in launched), launched
            _write(admin, mysql_db.name, 1)
            launched = odd.drive(defs, instance)
            assert launched and all(run.success for run in launched), launched
        for name in NAMES:
            assert _sink_rows(path, mysql_db.name, name) == _source_rows(admin, mysql_db.name, name), name
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP USER '{user}'@'%'")
        admin.close()
