"""Every MariaDB source check of `dbmazz check`: made to fail on the real server, fixed by running what it prints
exactly as printed (a configuration fix: by doing what it says), then `dbmazz check` says ok AND setup, the initial
load, a first capture and a first apply into a sink work as the same least-privilege user, row by row.

Global settings are put back as they were after each case (the server is shared by the session's tests).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from types import SimpleNamespace

import pymysql
import pytest

from dbmazz_connectors.core import create_sink
from dbmazz_connectors.engine import apply_batch, capture_range, set_up_source
from dbmazz_connectors.snapshots import plan_snapshot, run_snapshot
from dbmazz_connectors.sources.mysql import MySqlSource
from infra.mariadb import MariaDbServer
from tests.connectors.sources.mysql.conftest import create_replication_user
from tests.connectors.values._canon import differences, duckdb_rows, mariadb_rows
from tests.fixtures.servers import MySqlDatabase

from ..schema_evolution._compare import T
from ._check import dbmazz_check

COLUMNS = {"id": T("int32"), "v": T("string")}
GLOBALS = ("binlog_format", "binlog_row_image", "binlog_row_metadata", "binlog_expire_logs_seconds")


@dataclass
class Case:
    check: str
    message: str
    breaks: list[str] = field(default_factory=list)  # run as root; {user}: the user's account
    options: dict = field(default_factory=dict)
    config_fix: dict | None = None  # the options after a configuration fix


CASES = {
    "binlog_format": Case(
        "binlog_format", "expected binlog_format=ROW, found MIXED", ["SET GLOBAL binlog_format = 'MIXED'"]
    ),
    "binlog_row_image": Case(
        "binlog_row_image",
        "expected binlog_row_image=FULL, found MINIMAL",
        ["SET GLOBAL binlog_row_image = 'MINIMAL'"],
    ),
    "binlog_row_metadata": Case(
        "binlog_row_metadata",
        "expected binlog_row_metadata=FULL, found MINIMAL",
        ["SET GLOBAL binlog_row_metadata = 'MINIMAL'"],
    ),
    "binlog retention": Case(
        "binlog_retention",
        "expected binlogs kept at least the catch-up window (86400s), found 3600s",
        ["SET GLOBAL binlog_expire_logs_seconds = 3600"],
    ),
    "reader server_id": Case(
        "server_id",
        "expected a reader server_id different from the server's own",
        options={"server_id": "SERVER"},
        config_fix={},
    ),
    "REPLICATION SLAVE": Case(
        "privileges",
        "expected the REPLICATION SLAVE privilege",
        ["REVOKE REPLICATION SLAVE ON *.* FROM {user}"],
    ),
    "REPLICATION CLIENT": Case(
        "privileges",
        "expected the REPLICATION CLIENT privilege",
        ["REVOKE REPLICATION CLIENT ON *.* FROM {user}"],
    ),
    "LOCK TABLES (lock_tables snapshots)": Case(
        "privileges", "expected the LOCK TABLES privilege", options={"snapshot_method": "lock_tables"}
    ),
    "table readable": Case("tables", "to exist and be readable", ["REVOKE SELECT ON {db}.* FROM {user}"]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_a_failing_check_fixed_as_printed_then_the_pipeline_works(
    name, mysql_db, mysql_capture_login, changelog, tmp_path, monkeypatch, capsys
):
    case = CASES[name]
    login = mysql_capture_login
    admin = mysql_db.connect()
    with admin.cursor() as cur:
        cur.execute("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20))")
        cur.execute("INSERT INTO t SELECT seq, CONCAT('t', seq) FROM seq_1_to_20")
        cur.execute(f"SELECT {', '.join(f'@@GLOBAL.{g}' for g in GLOBALS)}, @@server_id")
        *saved, server_id = cur.fetchone()
    options = {k: (server_id if v == "SERVER" else v) for k, v in case.options.items()}
    url = login.url.replace(f":{login.password}@", "@")
    table = f"{mysql_db.name}.t"
    try:
        with admin.cursor() as cur:
            for statement in case.breaks:
                cur.execute(statement.format(user=f"'{login.user}'@'%'", db=f"`{mysql_db.name}`"))
        code, out = dbmazz_check(tmp_path, monkeypatch, capsys, url, login.password, [table], **options)
        assert code == 1 and f"[{case.check}] " in out and case.message in out, out
        source = MySqlSource.from_config({"url": login.url, "pipeline": "p1", "tables": [table], **options})
        source.connect()
        problems = source.preflight()
        source.disconnect()
        assert [p.check for p in problems] == [case.check], problems
        if case.config_fix is None:
            with admin.cursor() as cur:
                cur.execute(problems[0].fix.split(" -- ")[0])  # as printed (the statement, not its comment)
        else:
            options = case.config_fix
        code, out = dbmazz_check(tmp_path, monkeypatch, capsys, url, login.password, [table], **options)
        assert (code, out.splitlines()[0]) == (0, "p1: ok"), out
        _replicate(mysql_db, login, table, options, changelog, tmp_path)
    finally:
        with admin.cursor() as cur:
            for name_, value in zip(GLOBALS, saved, strict=True):
                cur.execute(f"SET GLOBAL {name_} = %s", (value,))
        admin.close()


def _replicate(mysql_db, login, table: str, options: dict, changelog, tmp_path) -> None:
    source = MySqlSource.from_config({"url": login.url, "pipeline": "p1", "tables": [table], **options})
    source.connect()
    sink = create_sink({"url": f"duckdb:///{tmp_path}/sink.duckdb", "pipeline": "p1"})
    sink.connect()
    admin = mysql_db.connect()  # a new session: it takes the fixed global settings
    try:
        set_up_source(source)
        start = source.current_position()
        run_snapshot(
            source, changelog, plan_snapshot(source, changelog, "p1", [table], reason="initial load")
        )
        with admin.cursor() as cur:
            cur.execute("UPDATE t SET v = 'changed' WHERE id = 3")
            cur.execute("DELETE FROM t WHERE id = 4")
            cur.execute("INSERT INTO t VALUES (100, 'new')")
        capture_range(source, changelog, "p1", start, source.current_position())
        for manifest in changelog.batches("p1"):
            apply_batch(changelog, sink, "p1", manifest.batch_id)
        expected = mariadb_rows(admin, "t", COLUMNS)
        assert not differences(expected, duckdb_rows(sink, table, COLUMNS), "duckdb")
        assert expected[3]["v"] == "changed" and 4 not in expected and 100 in expected
    finally:
        admin.close()
        sink.disconnect()
        source.disconnect()


def test_binary_log_off_fixed_as_printed_then_the_pipeline_works(changelog, tmp_path, monkeypatch, capsys):
    """log_bin needs a restart: its fix says so, and doing it (a restart with log_bin=mysql-bin) makes check ok."""
    with MariaDbServer(options={"log-bin": None, "binlog-row-metadata": "FULL"}) as server:
        db = MySqlDatabase(server, f"t_{secrets.token_hex(4)}")
        admin = pymysql.connect(**server.connect_kwargs())
        with admin.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{db.name}`")
            cur.execute(f"USE `{db.name}`")  # seq_1_to_N needs a current database
            cur.execute(f"CREATE TABLE `{db.name}`.t (id INT PRIMARY KEY, v VARCHAR(20))")
            cur.execute(f"INSERT INTO `{db.name}`.t SELECT seq, CONCAT('t', seq) FROM seq_1_to_20")
        user, password = create_replication_user(admin, db.name)
        admin.close()
        login = SimpleNamespace(url=db.url_as(user, password), user=user, password=password)
        url = login.url.replace(f":{password}@", "@")
        table = f"{db.name}.t"
        code, out = dbmazz_check(tmp_path, monkeypatch, capsys, url, password, [table])
        assert code == 1 and "[log_bin] expected the binary log on, found log_bin=OFF" in out, out
        assert "fix: start the server with log_bin=mysql-bin (needs a restart)" in out, out
        server.restart({"log-bin": "mysql-bin"})  # what the fix says
        code, out = dbmazz_check(tmp_path, monkeypatch, capsys, url, password, [table])
        assert (code, out.splitlines()[0]) == (0, "p1: ok"), out
        _replicate(db, login, table, {}, changelog, tmp_path)
