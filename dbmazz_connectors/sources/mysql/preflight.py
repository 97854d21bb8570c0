"""Every requirement of the binlog source, checked without changing anything; each problem has its fix.

A fix is one statement an administrator can run as printed (names quoted for any identifier: a
hyphenated database, a backtick or a quote in a name), followed at most by a ``--`` comment.
"""

from __future__ import annotations

import pymysql

from ...core.errors import MissingPrimaryKeyError, Problem, UnmappableTypeError
from ._keys import quote
from ._schema import load_table_info, schema_from_info
from .config import MySqlConfig

__all__ = ["run_preflight"]

_SET = "SET GLOBAL {name} = {value} -- and {name}={value} under [mysqld] in the server's config file, to survive a restart"


def _string(text: str) -> str:
    """A MySQL string literal that reads the same with or without NO_BACKSLASH_ESCAPES (quotes doubled)."""
    if "\\" in text:
        return "0x" + text.encode().hex()  # a hex literal: no escaping rule applies
    return "'" + text.replace("'", "''") + "'"


def _account(conn: pymysql.Connection, config: MySqlConfig) -> str:
    """The connected account as a GRANT names it: ``'user'@'host'`` with the host it was matched by."""
    with conn.cursor() as cur:
        cur.execute("SELECT CURRENT_USER()")
        user, _, host = str(cur.fetchone()[0]).rpartition("@")
    return f"{_string(user or config.user)}@{_string(host or '%')}"


def _variables(conn: pymysql.Connection) -> dict[str, str]:
    with conn.cursor() as cur:
        cur.execute(
            "SHOW GLOBAL VARIABLES WHERE Variable_name IN ('log_bin', 'binlog_format', 'binlog_row_image',"
            " 'binlog_row_metadata', 'binlog_expire_logs_seconds', 'expire_logs_days', 'server_id', 'gtid_mode',"
            " 'gtid_strict_mode', 'log_bin_compress', 'binlog_transaction_compression')"
        )
        return {name.lower(): str(value) for name, value in cur.fetchall()}


def _binlog_settings(v: dict[str, str]) -> list[Problem]:
    problems = []
    if v.get("log_bin", "OFF").upper() != "ON":
        problems.append(
            Problem(
                "log_bin",
                "expected the binary log on, found log_bin=OFF",
                "start the server with log_bin=mysql-bin (needs a restart)",
            )
        )
    wanted = {"binlog_format": "ROW", "binlog_row_image": "FULL", "binlog_row_metadata": "FULL"}
    for name, value in wanted.items():
        found = v.get(name)
        if found is None and name == "binlog_row_metadata":
            continue  # older servers: names come from information_schema (see README)
        if (found or "").upper() != value:
            problems.append(
                Problem(
                    name,
                    f"expected {name}={value}, found {found}",
                    _SET.format(name=name, value=f"'{value}'"),
                )
            )
    # MariaDB's log_bin_compress is decoded; MySQL 8's transaction payloads are not
    if v.get("binlog_transaction_compression", "OFF").upper() == "ON":
        problems.append(
            Problem(
                "binlog_transaction_compression",
                "expected binlog_transaction_compression=OFF (MySQL's compressed transaction payloads "
                "are not decoded), found ON",
                _SET.format(name="binlog_transaction_compression", value="OFF"),
            )
        )
    return problems


def _retention(v: dict[str, str], window: int) -> list[Problem]:
    seconds = int(v.get("binlog_expire_logs_seconds") or 0)
    if not seconds:
        seconds = int(float(v.get("expire_logs_days") or 0) * 86_400)
    if seconds and seconds < window:
        return [
            Problem(
                "binlog_retention",
                f"expected binlogs kept at least the catch-up window ({window}s), found {seconds}s: a "
                "pipeline stopped longer than that must re-snapshot",
                _SET.format(name="binlog_expire_logs_seconds", value=str(window)),
            )
        ]
    return []


def _server_id(conn: pymysql.Connection, v: dict[str, str], config: MySqlConfig) -> list[Problem]:
    problems = []
    if str(config.server_id) == v.get("server_id"):
        problems.append(
            Problem(
                "server_id",
                f"expected a reader server_id different from the server's own "
                f"({v.get('server_id')}), found the same",
                "set the source option server_id",
            )
        )
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW SLAVE HOSTS")
            ids = {int(r[0]) for r in cur.fetchall()}
    except pymysql.err.MySQLError:
        ids = set()  # needs REPLICATION MASTER ADMIN; the reader id is derived from the pipeline name anyway
    if config.server_id in ids:
        problems.append(
            Problem(
                "server_id",
                f"expected a unique reader server_id, found replica {config.server_id} registered",
                "set the source option server_id to an unused number",
            )
        )
    return problems


def _grants(conn: pymysql.Connection, config: MySqlConfig) -> list[Problem]:
    with conn.cursor() as cur:
        cur.execute("SHOW GRANTS")
        grants = " ".join(r[0] for r in cur.fetchall()).upper()
    if "ALL PRIVILEGES ON *.*" in grants:
        return []
    needed = {
        "REPLICATION SLAVE": ("REPLICATION SLAVE",),
        "REPLICATION CLIENT": ("REPLICATION CLIENT", "BINLOG MONITOR", "SUPER"),
    }
    who = _account(conn, config)
    return [
        Problem(
            "privileges",
            f"expected the {name} privilege for {config.user}, found none",
            f"GRANT {name} ON *.* TO {who}",
        )
        for name, names in needed.items()
        if not any(n in grants for n in names)
    ]


def _snapshot_grants(conn: pymysql.Connection, config: MySqlConfig, mariadb: bool) -> list[Problem]:
    """The lock_tables snapshot method (MySQL's) needs LOCK TABLES on the tables' databases."""
    if config.snapshot_method_for(mariadb) != "lock_tables":
        return []
    with conn.cursor() as cur:
        cur.execute("SHOW GRANTS")
        grants = [r[0].upper().replace('"', "`") for r in cur.fetchall()]
    problems = []
    for database in sorted({t.split(".", 1)[0] for t in config.tables}):
        escaped = database.replace("_", "\\_")  # SHOW GRANTS keeps a grant's LIKE escapes (t\_db)
        scopes = ("ON *.*", f"ON {quote(database).upper()}.*", f"ON {quote(escaped).upper()}.*")
        if not any(
            ("LOCK TABLES" in g or "ALL PRIVILEGES" in g) and any(s in g for s in scopes) for g in grants
        ):
            problems.append(
                Problem(
                    "privileges",
                    f"expected the LOCK TABLES privilege on {database} for {config.user} "
                    "(consistent snapshots on MySQL), found none",
                    f"GRANT LOCK TABLES ON {quote(database)}.* TO {_account(conn, config)}",
                )
            )
    return problems


def _tables(conn: pymysql.Connection, config: MySqlConfig) -> list[Problem]:
    problems = []
    infos = load_table_info(conn, config.tables)
    for table in config.tables:
        database = table.split(".", 1)[0]
        if table not in infos:
            problems.append(
                Problem(
                    "tables",
                    f"expected table {table} to exist and be readable by {config.user}, "
                    "found none (create it if it does not exist)",
                    f"GRANT SELECT ON {quote(database)}.* TO {_account(conn, config)}",
                )
            )
            continue
        try:
            schema_from_info(infos[table])
        except MissingPrimaryKeyError as exc:
            problems.append(Problem("tables", exc.message, _primary_key_fix(conn, table)))
        except UnmappableTypeError as exc:
            problems.append(Problem("tables", exc.message, exc.hint))
    return problems


def _primary_key_fix(conn: pymysql.Connection, table: str) -> str:
    """``ALTER TABLE ... ADD PRIMARY KEY`` on the columns of the narrowest unique index on NOT NULL columns
    (whole columns, no expression), or the table's removal from the pipeline when there is none."""
    database, name = table.split(".", 1)
    with conn.cursor() as cur:
        cur.execute(
            "SELECT s.INDEX_NAME, s.COLUMN_NAME, s.SUB_PART, c.IS_NULLABLE FROM information_schema.STATISTICS s "
            "LEFT JOIN information_schema.COLUMNS c ON c.TABLE_SCHEMA = s.TABLE_SCHEMA AND c.TABLE_NAME = s.TABLE_NAME "
            "AND c.COLUMN_NAME = s.COLUMN_NAME WHERE s.TABLE_SCHEMA = %s AND s.TABLE_NAME = %s AND s.NON_UNIQUE = 0 "
            "ORDER BY s.INDEX_NAME, s.SEQ_IN_INDEX",
            (database, name),
        )
        indexes: dict[str, list] = {}
        for index, column, sub_part, nullable in cur.fetchall():
            indexes.setdefault(index, []).append((column, sub_part, nullable))
    usable = [
        [c for c, _, _ in cols]
        for _, cols in sorted(indexes.items())
        if all(c is not None and sub is None and nullable == "NO" for c, sub, nullable in cols)
    ]
    if not usable:
        return MissingPrimaryKeyError.remove_hint(table)
    columns = ", ".join(quote(c) for c in min(usable, key=len))
    return f"ALTER TABLE {quote(database)}.{quote(name)} ADD PRIMARY KEY ({columns})"


def run_preflight(conn: pymysql.Connection, config: MySqlConfig, mariadb: bool) -> list[Problem]:
    """Binlog settings, retention vs the catch-up window, reader server_id, privileges, tables."""
    v = _variables(conn)
    problems = _binlog_settings(v) + _retention(v, config.catch_up_window_seconds)
    problems += _server_id(conn, v, config) + _grants(conn, config) + _tables(conn, config)
    problems += _snapshot_grants(conn, config, mariadb)
    if not mariadb and v.get("gtid_mode", "OFF").upper() not in ("ON", "OFF"):
        problems.append(
            Problem(
                "gtid_mode",
                f"expected gtid_mode ON or OFF, found {v.get('gtid_mode')} (a transition)",
                "finish the GTID migration: SET GLOBAL gtid_mode = ON",
            )
        )
    return problems
