"""Every fix statement the MySQL preflight prints runs as printed, for any identifier; then capture works."""

from __future__ import annotations

import secrets
import uuid

import pymysql
import pytest

from dbmazz_connectors.changelog import ChangeLog
from dbmazz_connectors.core.errors import ConfigError
from dbmazz_connectors.engine import capture_range, set_up_source
from dbmazz_connectors.sources.mysql import MySqlSource
from dbmazz_connectors.sources.mysql.preflight import _SET
from tests.connectors.sources.mysql._my import folded_rows
from tests.fixtures.servers import MySqlDatabase


@pytest.fixture
def odd_database(mariadb_server):
    """A database whose name holds a dash and a backtick, with a table whose name holds a backtick and a space."""
    name = f"t-{uuid.uuid4().hex[:8]}`x"
    admin = pymysql.connect(**mariadb_server.connect_kwargs())
    with admin.cursor() as cur:
        cur.execute(
            "SET GLOBAL binlog_row_metadata = 'FULL'"
        )  # the documented requirement (the suite's setting)
        cur.execute(f"CREATE DATABASE `{name.replace('`', '``')}`")
        cur.execute(
            f"CREATE TABLE `{name.replace('`', '``')}`.`o``r ders` (id INT PRIMARY KEY, v VARCHAR(20))"
        )
    yield MySqlDatabase(mariadb_server, name), admin
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE `{name.replace('`', '``')}`")
    admin.close()


def _rows(admin, database: str) -> list[dict]:
    with admin.cursor() as cur:
        cur.execute(f"SELECT id, v FROM `{database.replace('`', '``')}`.`o``r ders` ORDER BY id")
        return [{"id": i, "v": v} for i, v in cur.fetchall()]


def test_printed_fixes_run_as_printed_then_setup_and_capture_work(odd_database, tmp_path):
    db, admin = odd_database
    user, password = f"o'k-{secrets.token_hex(3)}", secrets.token_hex(10)
    with admin.cursor() as cur:
        cur.execute("CREATE USER %s@'%%' IDENTIFIED BY %s", (user, password))
    table = f"{db.name}.o`r ders"
    try:
        source = MySqlSource.from_config(
            {
                "url": db.server.url("", user=user, password=password),
                "pipeline": "odd",
                "tables": [table],
                "snapshot_method": "lock_tables",
            }
        )
        source.connect()
        problems = source.preflight()
        fixes = [p.fix for p in problems]
        assert {p.check for p in problems} == {"privileges", "tables"}, problems
        assert len(fixes) == 4 and all(f.startswith("GRANT ") for f in fixes), fixes
        quoted = "`" + db.name.replace("`", "``") + "`.*"
        assert sum(quoted in f for f in fixes) == 2 and all("'o''k-" in f for f in fixes), fixes
        with admin.cursor() as cur:
            for fix in fixes:
                cur.execute(fix)  # as printed, as the administrator
        source.disconnect()
        source.connect()  # grants are read at login
        assert source.preflight() == []
        set_up_source(source)
        changelog = ChangeLog(str(tmp_path / "changelog"))
        start = source.current_position()
        with admin.cursor() as cur:
            cur.execute(f"INSERT INTO `{db.name.replace('`', '``')}`.`o``r ders` VALUES (1, 'a'), (2, 'b')")
            cur.execute(f"UPDATE `{db.name.replace('`', '``')}`.`o``r ders` SET v = 'c' WHERE id = 2")
        capture_range(source, changelog, "p1", start, source.current_position())
        folded = folded_rows(changelog, table)
        assert folded == [{"id": 1, "v": "a"}, {"id": 2, "v": "c"}] == _rows(admin, db.name), folded
        source.disconnect()
    finally:
        with admin.cursor() as cur:
            cur.execute("DROP USER %s@'%%'", (user,))


def test_a_set_fix_runs_as_printed(odd_database):
    _, admin = odd_database
    with admin.cursor() as cur:
        cur.execute("SELECT @@GLOBAL.binlog_row_metadata")
        current = cur.fetchone()[0]
        cur.execute(
            _SET.format(name="binlog_row_metadata", value=f"'{current}'")
        )  # its current value: harmless
        cur.execute("SELECT @@GLOBAL.binlog_row_metadata")
        assert cur.fetchone()[0] == current


def test_wrong_password_message_keeps_the_servers_words(mysql_db):
    source = MySqlSource.from_config({"url": mysql_db.url_as("nobody", "s3cret-pw"), "tables": ["a.b"]})
    with pytest.raises(ConfigError) as caught:
        source.connect()
    assert "s3cret-pw" not in str(caught.value)
    assert "using password: YES" in str(caught.value), str(caught.value)
