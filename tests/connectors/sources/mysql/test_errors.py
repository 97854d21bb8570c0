"""What bad input gets: a purged binlog and a statement-based binlog each stop capture with their own error."""

from __future__ import annotations

import time

import pytest

from dbmazz_connectors.core.errors import LogPurgedError
from dbmazz_connectors.sources.mysql import MySqlSource
from dbmazz_connectors.sources.mysql._reader import BinlogFormatError
from infra.mariadb import MariaDbServer

from .conftest import create_replication_user


def test_purged_binlog_says_resnapshot(mysql_db, make_source):
    conn = mysql_db.connect()
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE t (id INT PRIMARY KEY)")
    source = make_source(["t"])
    start = source.current_position()
    with conn.cursor() as cur:
        cur.execute("INSERT INTO t VALUES (1)")
        cur.execute("FLUSH BINARY LOGS")
        cur.execute("SHOW MASTER STATUS")
        current = cur.fetchone()[0]
        for _ in range(100):  # the server keeps a file until InnoDB's binlog checkpoint has moved past it
            cur.execute(f"PURGE BINARY LOGS TO '{current}'")
            cur.execute("SHOW BINARY LOGS")
            if cur.fetchone()[0] == current:
                break
            time.sleep(0.1)
    with pytest.raises(LogPurgedError) as caught:
        list(source.read_changes(start, source.current_position()))
    assert start.file in str(caught.value) and "re-snapshot" in str(caught.value)
    assert current in str(caught.value), "the message names the oldest binlog still available"


def test_statement_binlog_format_is_reported_and_refused():
    with MariaDbServer(options={"binlog-format": "STATEMENT"}) as server:
        import pymysql

        admin = pymysql.connect(**server.connect_kwargs())
        with admin.cursor() as cur:
            cur.execute("CREATE DATABASE shop")
            cur.execute("CREATE TABLE shop.t (id INT PRIMARY KEY, v VARCHAR(10))")
        user, password = create_replication_user(admin, "shop")
        source = MySqlSource.from_config({"url": server.url("shop", user, password), "tables": ["shop.t"]})
        source.connect()
        problems = {p.check: p for p in source.preflight()}
        assert "found STATEMENT" in problems["binlog_format"].message
        assert "SET GLOBAL binlog_format = 'ROW'" in problems["binlog_format"].fix
        start = source.current_position()
        with admin.cursor() as cur:
            cur.execute("INSERT INTO shop.t VALUES (1, 'a')")
        with pytest.raises(BinlogFormatError, match="logged as a statement") as caught:
            list(source.read_changes(start, source.current_position()))
        assert "binlog_format = 'ROW'" in str(caught.value)
        source.disconnect()
        admin.close()
