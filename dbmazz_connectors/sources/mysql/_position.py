"""The binlog end position of a server, as SHOW MASTER STATUS / SHOW BINARY LOG STATUS reports it."""

from __future__ import annotations

import pymysql

from ...core.errors import ConfigError
from .position import BinlogPosition

__all__ = ["binlog_end", "visible_end"]


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
        raise ConfigError(
            "the server reports no binary log position (is log_bin on?)",
            hint="start the server with log_bin=mysql-bin and binlog_format=ROW",
        )
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


def visible_end(conn: pymysql.Connection, mariadb: bool) -> BinlogPosition:
    """The binlog position up to which every transaction is visible to a snapshot started now.

    MariaDB writes a transaction to the binlog before its commit becomes visible (group commit), so the
    binlog end can lie past a transaction a new snapshot does not see yet. A pipeline that started its
    change stream there, or a re-sync whose floor lay there, could then miss that transaction or sweep
    a chunk that holds it. ``binlog_snapshot_position`` of a consistent snapshot has no such gap: every
    transaction before it is visible, none after it. MySQL has no such status: the binlog end is used.
    """
    if not mariadb:
        return binlog_end(conn, mariadb)
    with conn.cursor() as cur:
        cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT")
        try:
            cur.execute("SHOW STATUS LIKE 'binlog_snapshot_%'")
            status = {_text(k).lower(): _text(v) for k, v in cur.fetchall()}
        finally:
            cur.execute("COMMIT")
    end = binlog_end(conn, mariadb)
    if "binlog_snapshot_position" not in status:
        return end
    snapshot = BinlogPosition(status["binlog_snapshot_file"], int(status["binlog_snapshot_position"]))
    same = (snapshot.file, snapshot.offset) == (end.file, end.offset)
    return end if same else snapshot  # the GTID state is known only for the binlog end itself


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
