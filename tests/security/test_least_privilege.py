"""The suite's least-privilege audit (tests/fixtures/least_privilege.py) sees a dbmazz superuser login, and only that.

The two real-server tests log dbmazz in as a superuser on purpose, so they are allow-listed; the audit's summary
lists their logins under "allowed" at the end of the run.
"""

from __future__ import annotations

import pytest

from dbmazz_connectors.sources.mysql import MySqlSource
from dbmazz_connectors.sources.postgres import PostgresSource
from tests.fixtures.least_privilege import mariadb_logins, postgres_logins

PG_LOG = """\
2026-11-29 05:40:43.391 UTC [10922] LOG:  connection authorized: user=postgres database=t_1 application_name=dbmazz_p
2026-11-29 05:40:43.392 UTC [10923] LOG:  connection authorized: user=postgres database=t_1
2026-11-29 05:40:43.400 UTC [10924] LOG:  replication connection authorized: user=postgres application_name=dbmazz_p
2026-11-29 05:40:43.401 UTC [10925] LOG:  connection authorized: user=cap_1 database=t_1 application_name=dbmazz_p
2026-11-29 05:40:43.402 UTC [10926] LOG:  connection authorized: user=sink_t_1 database=t_1 application_name=dbmazz-sink
2026-11-29 05:40:43.403 UTC [10927] LOG:  connection authorized: user=boss database=t_1 application_name=dbmazz-sink
"""

MY_LOG = "\n".join(
    [  # tabs as MariaDB writes them
        "/usr/sbin/mariadbd, Version: 10.11.19-MariaDB-0+deb12u1-log (Debian 12). started with:",
        "Time\t\t    Id Command\tArgument",
        "261129  5:40:45\t     5 Connect\tdbmazz_admin@127.0.0.1 on t_1 using TCP/IP",
        "\t\t     5 Query\tSELECT VERSION(), @@global.binlog_checksum",
        "\t\t     6 Connect\trepl_1@127.0.0.1 on  using TCP/IP",
        "\t\t     6 Query\tSELECT VERSION(), @@global.binlog_checksum",
        "\t\t     7 Connect\tdbmazz_admin@127.0.0.1 on t_1 using TCP/IP",
        "\t\t     7 Query\tSELECT * FROM t_1.orders",
        "261129  5:40:46\t     8 Connect\troot@localhost on  using Socket",
        "\t\t     8 Query\tSET @master_binlog_checksum = @@global.binlog_checksum",
        "\t\t     8 Binlog Dump\tLog: 'mysql-bin.000001'  Pos: 4",
        "/usr/sbin/mariadbd, Version: 10.11.19-MariaDB-0+deb12u1-log (Debian 12). started with:",
        "Time\t\t    Id Command\tArgument",
        "261129  5:41:00\t     5 Connect\trepl_1@127.0.0.1 on  using TCP/IP",
        "\t\t     5 Binlog Dump\tLog: 'mysql-bin.000001'  Pos: 4",
    ]
)


def test_postgres_log_superuser_logins_of_dbmazz_only():
    found = postgres_logins(PG_LOG, {"postgres", "boss"})
    assert [(login.user, login.kind, login.client) for login in found] == [
        ("postgres", "normal", "application_name=dbmazz_p"),
        ("postgres", "replication", "application_name=dbmazz_p"),
        ("boss", "normal", "application_name=dbmazz-sink"),
    ]  # the test's own admin connection (no application_name) and the least-privilege roles are not listed


def test_mariadb_general_log_superuser_logins_of_the_source_only():
    found = mariadb_logins(MY_LOG, {"root", "dbmazz_admin"})
    assert [(login.user, login.kind, login.database) for login in found] == [
        ("dbmazz_admin", "normal", "t_1"),
        ("root", "replication", ""),
    ]  # thread 7 is a test's admin query; thread 5 after the restart is the capture user


@pytest.mark.superuser_allowed("proves the audit finds a PostgreSQL source logged in as the superuser")
def test_a_postgres_source_as_superuser_is_in_the_audit(pg_db):
    source = PostgresSource.from_config({"url": pg_db.url, "pipeline": "audit", "tables": ["public.t"]})
    source.connect()
    source.disconnect()
    with open(pg_db.server.log_path) as fh:
        found = postgres_logins(fh.read(), {pg_db.server.user})
    assert any(
        login.database == pg_db.name and login.client == "application_name=dbmazz_audit" for login in found
    )


@pytest.mark.superuser_allowed(
    "proves the audit finds a MariaDB source logged in as the all-privileges admin"
)
def test_a_mariadb_source_as_admin_is_in_the_audit(mysql_db, mysql_capture_login):
    def logins():
        with open(mysql_db.server.general_log_path) as fh:
            return mariadb_logins(fh.read(), {"root", mysql_db.server.admin_user})

    before = len(logins())
    for url in (
        mysql_db.url,
        mysql_capture_login.url,
    ):  # the admin's login is found, the capture user's is not
        source = MySqlSource.from_config({"url": url, "pipeline": "audit", "tables": [f"{mysql_db.name}.t"]})
        source.connect()
        source.disconnect()
    assert [(login.user, login.kind) for login in logins()[before:]] == [
        (mysql_db.server.admin_user, "normal")
    ]
