"""Fixtures of the MySQL source tests: FULL row metadata on the shared MariaDB, a least-privilege user."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator

import pytest

from dbmazz_connectors.sources.mysql import MySqlSource


@pytest.fixture(scope="session")
def full_row_metadata(mariadb_server):
    """The source's documented requirement; MariaDB's default is MINIMAL."""
    import pymysql

    conn = pymysql.connect(**mariadb_server.connect_kwargs())
    with conn.cursor() as cur:
        cur.execute("SET GLOBAL binlog_row_metadata = 'FULL'")
    conn.close()


def create_replication_user(admin_conn, database: str) -> tuple[str, str]:
    """REPLICATION SLAVE, REPLICATION CLIENT (MariaDB: BINLOG MONITOR) and SELECT on one database: not root."""
    user, password = f"repl_{secrets.token_hex(4)}", secrets.token_hex(12)
    with admin_conn.cursor() as cur:
        cur.execute(f"CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'")
        cur.execute(f"GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO '{user}'@'%'")
        cur.execute(f"GRANT SELECT ON `{database}`.* TO '{user}'@'%'")
    return user, password


@pytest.fixture
def make_source(mysql_db, full_row_metadata) -> Iterator[Callable[..., MySqlSource]]:
    """``make_source(tables, **options)``: a connected source logged in as a least-privilege user."""
    admin = mysql_db.connect()
    user, password = create_replication_user(admin, mysql_db.name)
    sources: list[MySqlSource] = []

    def make(tables: list[str], **options) -> MySqlSource:
        qualified = [t if "." in t else f"{mysql_db.name}.{t}" for t in tables]
        source = MySqlSource.from_config(
            {"url": mysql_db.url_as(user, password), "pipeline": "test", "tables": qualified, **options}
        )
        source.connect()
        sources.append(source)
        return source

    yield make
    for source in sources:
        source.disconnect()
    with admin.cursor() as cur:
        cur.execute(f"DROP USER '{user}'@'%'")
    admin.close()
