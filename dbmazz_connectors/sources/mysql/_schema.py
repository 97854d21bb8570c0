"""Table schemas from information_schema and from TABLE_MAP events, built through one path so they agree.

The binlog is the authority for what a row image holds at its position (TABLE_MAP: types, and
with ``binlog_row_metadata=FULL`` names, enum labels and the primary key); information_schema
adds what the binlog cannot say (MariaDB's JSON, which is a longtext with a ``json_valid`` check).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from dataclasses import dataclass

import pymysql

from ...core.errors import MissingPrimaryKeyError, SchemaChangeError
from ...core.schema import TableSchema
from ._protocol import TableMap
from .types import BINARY_COLLATION, ColumnLayout, T, column_from_layout, labels_from_column_type

__all__ = ["TableInfo", "load_table_info", "schema_from_info", "resolve_layout", "schema_from_layout"]

_INT_CODES = {
    "tinyint": T.TINY,
    "smallint": T.SHORT,
    "mediumint": T.INT24,
    "int": T.LONG,
    "bigint": T.LONGLONG,
}
_SIMPLE = {"float": T.FLOAT, "double": T.DOUBLE, "year": T.YEAR, "date": T.DATE, "json": T.JSON}
_TEMPORAL = {"datetime": T.DATETIME2, "timestamp": T.TIMESTAMP2, "time": T.TIME2}
_BLOBS = {"tiny": 1, "": 2, "medium": 3, "long": 4}
_GEOMETRY = {
    "geometry",
    "point",
    "linestring",
    "polygon",
    "multipoint",
    "multilinestring",
    "multipolygon",
    "geometrycollection",
    "geomcollection",
}
_JSON_CHECK = re.compile(r"json_valid\(`?([^`)]+)`?\)", re.I)


@dataclass(frozen=True)
class TableInfo:
    """One table as information_schema shows it now."""

    database: str
    table: str
    columns: tuple[ColumnLayout, ...]
    primary_key: tuple[str, ...]


def _layout(row: dict, json_columns: set[str]) -> ColumnLayout:
    data_type = row["DATA_TYPE"].lower()
    column_type = row["COLUMN_TYPE"].lower()
    nullable = row["IS_NULLABLE"] == "YES"
    binary = data_type in ("binary", "varbinary") or data_type.endswith("blob")
    collation = BINARY_COLLATION if binary else 45
    base = dict(nullable=nullable, name=row["COLUMN_NAME"], collation=collation)
    if data_type in _INT_CODES:
        return ColumnLayout(_INT_CODES[data_type], 0, unsigned="unsigned" in column_type, **base)
    if data_type in ("decimal", "numeric"):
        return ColumnLayout(T.NEWDECIMAL, row["NUMERIC_PRECISION"] << 8 | row["NUMERIC_SCALE"], **base)
    if data_type == "bit":
        bits = row["NUMERIC_PRECISION"]
        return ColumnLayout(T.BIT, (bits // 8) << 8 | bits % 8, **base)
    if data_type in _TEMPORAL:
        return ColumnLayout(_TEMPORAL[data_type], row["DATETIME_PRECISION"] or 0, **base)
    if data_type in _SIMPLE:
        return ColumnLayout(_SIMPLE[data_type], 0, **base)
    if data_type in ("enum", "set"):
        code = T.ENUM if data_type == "enum" else T.SET
        return ColumnLayout(code, 0, labels=labels_from_column_type(row["COLUMN_TYPE"]), **base)
    if data_type in ("char", "binary"):
        return ColumnLayout(T.STRING, 0, **base)
    if data_type in ("varchar", "varbinary"):
        return ColumnLayout(T.VARCHAR, 0, **base)
    if data_type.endswith(("text", "blob")):
        size = _BLOBS.get(data_type[:-4], 2)
        return ColumnLayout(T.BLOB, size, is_json=row["COLUMN_NAME"] in json_columns, **base)
    if data_type in _GEOMETRY:
        return ColumnLayout(T.GEOMETRY, 4, **base)
    return ColumnLayout(-1, 0, **base)  # unmappable: reported by preflight and schema building


def load_table_info(conn: pymysql.Connection, tables: Iterable[str]) -> dict[str, TableInfo]:
    """The current layout of each existing table in ``tables`` (database.table), by qualified name."""
    out = {}
    with conn.cursor(pymysql.cursors.DictCursor) as cur:
        for qualified in tables:
            database, table = qualified.split(".", 1)
            cur.execute(
                "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, IS_NULLABLE, NUMERIC_PRECISION, NUMERIC_SCALE,"
                " DATETIME_PRECISION, COLUMN_KEY FROM information_schema.COLUMNS"
                " WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION",
                (database, table),
            )
            rows = cur.fetchall()
            if not rows:
                continue
            json_columns = _json_columns(cur, database, table)
            cur.execute(
                "SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE WHERE TABLE_SCHEMA = %s"
                " AND TABLE_NAME = %s AND CONSTRAINT_NAME = 'PRIMARY' ORDER BY ORDINAL_POSITION",
                (database, table),
            )
            primary_key = tuple(r["COLUMN_NAME"] for r in cur.fetchall())
            columns = tuple(_layout(r, json_columns) for r in rows)
            out[qualified] = TableInfo(database, table, columns, primary_key)
    return out


def _json_columns(cur, database: str, table: str) -> set[str]:
    """MariaDB's JSON columns: longtext with a CHECK (json_valid(col)) constraint."""
    try:
        cur.execute(
            "SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS"
            " WHERE CONSTRAINT_SCHEMA = %s AND TABLE_NAME = %s",
            (database, table),
        )
    except pymysql.err.MySQLError:  # MySQL 8.0 has no TABLE_NAME there; its JSON is a real type
        return set()
    return {m.group(1) for r in cur.fetchall() for m in _JSON_CHECK.finditer(r["CHECK_CLAUSE"])}


def schema_from_layout(
    database: str, table: str, columns: tuple[ColumnLayout, ...], primary_key: tuple[str, ...]
) -> TableSchema:
    qualified = f"{database}.{table}"
    schema = TableSchema(
        database, table, tuple(column_from_layout(c, qualified) for c in columns), primary_key
    )
    if not primary_key:
        raise MissingPrimaryKeyError(qualified)
    return schema


def schema_from_info(info: TableInfo) -> TableSchema:
    return schema_from_layout(info.database, info.table, info.columns, info.primary_key)


def resolve_layout(
    tmap: TableMap, info: TableInfo | None
) -> tuple[tuple[ColumnLayout, ...], tuple[str, ...]]:
    """The TABLE_MAP's columns with names, labels and JSON-ness filled in, and the primary key.

    With ``binlog_row_metadata=FULL`` the binlog names every column, so an old range decodes with
    the columns it had then; with MINIMAL, names come from information_schema by position and a
    layout that no longer matches it is an error (never a silent misnaming).
    """
    by_name = {c.name: c for c in info.columns} if info else {}
    resolved = []
    for i, col in enumerate(tmap.columns):
        if col.name is None:
            if (
                info is None
                or len(info.columns) != len(tmap.columns)
                or not _compatible(col, info.columns[i])
            ):
                raise SchemaChangeError(
                    f"table {tmap.qualified_name} in the binlog has {len(tmap.columns)} column(s) that do not match "
                    "its current definition, and the binlog does not name its columns",
                    hint="SET GLOBAL binlog_row_metadata = 'FULL' (and in the server config), then re-snapshot",
                )
            known = info.columns[i]
        else:
            known = by_name.get(col.name)
            known = known if known is not None and _compatible(col, known) else None
        resolved.append(
            dataclasses.replace(
                col,
                name=col.name or known.name,
                labels=col.labels or (known.labels if known else ()),
                is_json=bool(known and known.is_json and col.type_code == T.BLOB),
            )
        )
    names = [c.name for c in resolved]
    if tmap.primary_key is not None:
        primary_key = tuple(names[i] for i in tmap.primary_key)
    else:
        primary_key = tuple(k for k in (info.primary_key if info else ()) if k in names)
    return tuple(resolved), primary_key


def _compatible(binlog: ColumnLayout, current: ColumnLayout) -> bool:
    if binlog.type_code == current.type_code:
        return True
    strings = {T.VARCHAR, T.VAR_STRING}
    return binlog.type_code in strings and current.type_code in strings
