"""Preflight: every requirement checked up front, each problem with the statement that fixes it."""

from __future__ import annotations

import pytest

from dbmazz_connectors.core.errors import ConfigError
from dbmazz_connectors.sources.mysql import MySqlSource


def test_ready_server_and_least_privilege_user_pass(mysql_db, make_source):
    conn = mysql_db.connect()
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE t (id INT PRIMARY KEY)")
    source = make_source(["t"])
    assert source.preflight() == []
    assert source.mariadb and source.config.user.startswith("repl_")


def test_problems_name_their_fix(mysql_db, make_source):
    conn = mysql_db.connect()
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE nokey (v INT)")
        cur.execute("SET GLOBAL binlog_expire_logs_seconds = 3600")
    try:
        source = make_source(["nokey", "missing"], catch_up_window_seconds=86_400, server_id=1)
        problems = {(p.check, p.message): p.fix for p in source.preflight()}
    finally:
        with conn.cursor() as cur:
            cur.execute("SET GLOBAL binlog_expire_logs_seconds = 0")
    text = "\n".join(f"{check}: {message} -> {fix}" for (check, message), fix in problems.items())
    assert (
        "expected a primary key on" in text
        and f"remove {mysql_db.name}.nokey from the pipeline's tables" in text
    )
    assert f"expected table {mysql_db.name}.missing to exist" in text
    assert (
        "binlog_retention: expected binlogs kept at least the catch-up window (86400s), found 3600s" in text
    )
    assert "SET GLOBAL binlog_expire_logs_seconds = 86400" in text
    assert "server_id: expected a reader server_id different from the server's own (1)" in text


def test_user_without_replication_privileges(mysql_db):
    admin = mysql_db.connect()
    with admin.cursor() as cur:
        cur.execute("CREATE TABLE t (id INT PRIMARY KEY)")
        cur.execute("CREATE USER 'plain'@'%' IDENTIFIED BY 'pw-plain'")
        cur.execute(f"GRANT SELECT ON `{mysql_db.name}`.* TO 'plain'@'%'")
    try:
        source = MySqlSource.from_config(
            {"url": mysql_db.url_as("plain", "pw-plain"), "tables": [f"{mysql_db.name}.t"]}
        )
        source.connect()
        fixes = [p.fix for p in source.preflight() if p.check == "privileges"]
        assert "GRANT REPLICATION SLAVE ON *.* TO 'plain'@'%'" in fixes
        assert "GRANT REPLICATION CLIENT ON *.* TO 'plain'@'%'" in fixes
        source.disconnect()
    finally:
        with admin.cursor() as cur:
            cur.execute("DROP USER 'plain'@'%'")


def test_wrong_password_is_a_config_error_without_the_password(mysql_db):
    source = MySqlSource.from_config({"url": mysql_db.url_as("nobody", "s3cret-pw"), "tables": ["a.b"]})
    with pytest.raises(ConfigError) as caught:
        source.connect()
    assert "s3cret-pw" not in str(caught.value) and "refused" in str(caught.value)


def test_config_rejects_bad_input():
    with pytest.raises(ConfigError, match="database.table"):
        MySqlSource.from_config({"url": "mysql://u@h/db", "tables": ["orders"]})
    with pytest.raises(ConfigError, match="unknown mysql source option"):
        MySqlSource.from_config({"url": "mysql://u@h/db", "tables": ["a.b"], "slot": "x"})
    config = MySqlSource.from_config(
        {"url": "mariadb://u:p%40ss@h:3307/db", "pipeline": "shop", "tables": ["a.b"]}
    ).config
    assert (config.host, config.port, config.password) == ("h", 3307, "p@ss")
    assert 1_000_000_000 <= config.server_id < 2_000_000_000 and "p@ss" not in repr(config)


def test_row_count_reports_the_source_tables_rows(mysql_db, make_source):
    conn = mysql_db.connect()
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE counted (id INT PRIMARY KEY)")
        cur.execute("INSERT INTO counted VALUES (1), (2), (3)")
    source = make_source(["counted"])
    assert source.row_count(f"{mysql_db.name}.counted") == 3
