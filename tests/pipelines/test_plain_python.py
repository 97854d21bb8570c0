"""The README's plain-Python snippet, run as written against MariaDB: it starts, then follows changes."""

from __future__ import annotations

import re
from pathlib import Path

import duckdb
import pymysql

from tests.connectors.sources.mysql.conftest import create_replication_user

README = Path(__file__).parents[2] / "README.md"


def _snippet(source_url: str, table: str, sink_path: Path, changelog: Path) -> str:
    """The README's Python block, only its addresses replaced by this test's."""
    text = README.read_text()
    code = re.search(r"Without Dagster.*?```python\n(.*?)```", text, re.S).group(1)
    replacements = {
        '"mysql://dbmazz:...@localhost:3306/"': repr(source_url),
        '["shop.orders"]': repr([table]),
        '"duckdb:///shop.duckdb"': repr(f"duckdb:///{sink_path}"),
        '"./.dbmazz/changelog"': repr(str(changelog)),
    }
    for old, new in replacements.items():
        assert old in code, f"the README snippet no longer holds {old}"
        code = code.replace(old, new)
    return code


def test_readme_snippet_follows_a_mysql_source(mysql_db, tmp_path):
    admin = pymysql.connect(**mysql_db.server.connect_kwargs())
    with admin.cursor() as cur:
        cur.execute(
            "SET GLOBAL binlog_row_metadata = 'FULL'"
        )  # the documented requirement (the suite's setting)
        cur.execute(f"CREATE TABLE `{mysql_db.name}`.orders (id INT PRIMARY KEY, v VARCHAR(20))")
    user, password = create_replication_user(admin, mysql_db.name)
    table = f"{mysql_db.name}.orders"
    code = _snippet(
        mysql_db.server.url("", user=user, password=password),
        table,
        tmp_path / "s.duckdb",
        tmp_path / "changelog",
    )
    source_table = f"`{mysql_db.name}`.orders"
    try:
        exec(compile(code, "README.md", "exec"), {})  # first step: nothing yet, the start is remembered
        with admin.cursor() as cur:
            cur.execute(f"INSERT INTO {source_table} VALUES (1, 'a'), (2, 'b'), (3, 'c')")
        exec(compile(code, "README.md", "exec"), {})
        with admin.cursor() as cur:
            cur.execute(f"UPDATE {source_table} SET v = 'z' WHERE id = 2")
            cur.execute(f"DELETE FROM {source_table} WHERE id = 3")
        exec(compile(code, "README.md", "exec"), {})
        with duckdb.connect(str(tmp_path / "s.duckdb"), read_only=True) as conn:
            rows = conn.execute(f'SELECT id, v FROM "{mysql_db.name}".orders ORDER BY id').fetchall()
        assert rows == [(1, "a"), (2, "z")]
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP USER '{user}'@'%'")
        admin.close()
