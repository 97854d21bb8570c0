"""The binlog end position of a server, as SHOW MASTER STATUS / SHOW BINARY LOG STATUS reports it."""

from __future__ import annotations

import pymysql

from ...core.errors import ConfigError
from ...core.positions import BinlogPosition

__all__ = ["binlog_end"]


def binlog_end(conn: pymysql.Connection, mariadb: bool) -> BinlogPosition:
    """The end of the binlog now, plus the GTID state (MariaDB: ``gtid_binlog_pos``; MySQL: the executed set)."""
    statements = ["SHOW MASTER STATUS"] if mariadb else ["SHOW BINARY LOG STATUS", "SHOW MASTER STATUS"]
    row = None
    for statement in statements:
        try:
            with conn.cursor() as cur:
                cur.execute(statement)
                row = cur.fetchone()
            break
        except pymysql.err.ProgrammingError:
            continue
    if not row:
        raise ConfigError("the server reports no binary log position (is log_bin on?)",
                          hint="start the server with log_bin=mysql-bin and binlog_format=ROW")
    gtid = None
    if mariadb:
        with conn.cursor() as cur:
            cur.execute("SELECT @@global.gtid_binlog_pos")
            gtid = cur.fetchone()[0]
    elif len(row) > 4:
        gtid = row[4]
    file = row[0].decode() if isinstance(row[0], bytes) else row[0]
    gtid = gtid.decode() if isinstance(gtid, bytes) else gtid
    return BinlogPosition(file, int(row[1]), gtid or None)
