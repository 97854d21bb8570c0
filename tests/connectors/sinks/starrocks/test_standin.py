"""The stand-in StarRocks itself: it refuses what StarRocks refuses, and honours the documented
Stream Load headers the sink does not use (CSV, ``__op`` deletes), so it is a fair thing to test against."""

import pymysql
import pytest

from dbmazz_connectors.sinks.starrocks._stream_load import put_stream_load

_DDL = (
    "CREATE TABLE t (`id` BIGINT NOT NULL, `v` STRING NULL, `ver` BIGINT NULL) PRIMARY KEY (`id`) "
    'DISTRIBUTED BY HASH(`id`) PROPERTIES ("replication_num" = "1")'
)


@pytest.fixture
def conn(sr_db):
    admin = pymysql.connect(
        host="127.0.0.1",
        port=sr_db.server.query_port,
        user=sr_db.server.user,
        password=sr_db.server.password,
        autocommit=True,
    )
    admin.cursor().execute(f"CREATE DATABASE `{sr_db.name}`")
    admin.select_db(sr_db.name)
    admin.cursor().execute(_DDL)
    yield admin
    admin.close()


def _rows(conn, sql="SELECT id, v, ver FROM t ORDER BY id"):
    with conn.cursor() as cur:
        cur.execute(sql)
        return list(cur.fetchall())


def _load(sr_db, body: bytes, label: str, **headers):
    server = sr_db.server
    return put_stream_load(
        "127.0.0.1",
        server.http_port,
        sr_db.name,
        "t",
        {"label": label, **headers},
        body,
        user=server.user,
        password=server.password,
        timeout=30,
        source_table="t",
    )


def test_statements_it_does_not_know_get_an_err_packet(conn):
    with pytest.raises(pymysql.err.ProgrammingError, match="does not understand"):
        _rows(conn, "SHOW PROC '/backends'")
    assert _rows(conn, "SELECT 1 + 1") == [(2,)]  # the connection stays usable


def test_a_primary_key_that_is_not_the_first_column_is_refused(conn):
    with pytest.raises(pymysql.err.ProgrammingError, match="must be the first columns"):
        conn.cursor().execute(
            "CREATE TABLE u (`v` STRING NULL, `id` BIGINT NOT NULL) PRIMARY KEY (`id`) "
            "DISTRIBUTED BY HASH(`id`)"
        )


def test_csv_loads_with_op_deletes_and_merge_condition(conn, sr_db):
    _load(sr_db, b"1\ta\t5\n2\tb\t5\n3\t\\N\t5\n", "l1", format="csv", columns="id,v,ver")
    _load(sr_db, b"1\tolder\t4\n2\tnewer\t6\n", "l2", format="csv", columns="id,v,ver", merge_condition="ver")
    _load(sr_db, b"3\t\\N\t1\t1\n", "l3", format="csv", columns="id,v,ver,__op")
    assert _rows(conn) == [(1, "a", 5), (2, "newer", 6)]


def test_partial_updates_keep_the_columns_not_loaded(conn, sr_db):
    _load(sr_db, b'[{"id": 1, "v": "kept", "ver": 1}]', "p1", format="json", strip_outer_array="true")
    _load(
        sr_db,
        b'[{"id": 1, "ver": 2}, {"id": 9, "ver": 2}]',
        "p2",
        format="json",
        strip_outer_array="true",
        columns="id,ver",
        partial_update="true",
    )
    assert _rows(conn) == [(1, "kept", 2), (9, None, 2)]
    _load(sr_db, b'[{"id": 1, "ver": 3}]', "p3", format="json", strip_outer_array="true", columns="id,ver")
    assert _rows(conn) == [(1, None, 3), (9, None, 2)], "a full upsert replaces the whole row"
