"""Recognising the DDL statements of QUERY events that change a replicated table."""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["DdlTarget", "parse_ddl", "is_dml", "ACTIONS"]

# truncate: emptied; alter: new layout; drop: gone (a later CREATE brings an empty table);
# replace: CREATE OR REPLACE (dropped and created empty); rename: the name now means another table
# or none; rows: rows changed without row events (partition exchange or removal, tablespace import)
ACTIONS = ("truncate", "alter", "drop", "replace", "rename", "rows")

_IDENT = r"(?:`(?:[^`]|``)+`|[A-Za-z0-9_$]+)"
_NAME = rf"({_IDENT}(?:\s*\.\s*{_IDENT})?)"
_COMMENTS = re.compile(r"/\*.*?\*/|--[^\n]*\n|#[^\n]*\n", re.S)
_TRUNCATE = re.compile(rf"^TRUNCATE\s+(?:TABLE\s+)?{_NAME}", re.I)
_ALTER = re.compile(
    rf"^ALTER\s+(?:ONLINE\s+)?(?:IGNORE\s+)?TABLE\s+(?:IF\s+EXISTS\s+)?{_NAME}(.*)$", re.I | re.S
)
_DROP = re.compile(r"^DROP\s+(TEMPORARY\s+)?TABLE\s+(?:IF\s+EXISTS\s+)?(.*)$", re.I | re.S)
_REPLACE = re.compile(rf"^CREATE\s+OR\s+REPLACE\s+(TEMPORARY\s+)?TABLE\s+{_NAME}", re.I)
_RENAME = re.compile(r"^RENAME\s+TABLES?\s+(.*)$", re.I | re.S)
_ALTER_RENAME_TABLE = re.compile(
    rf"(?:^|,)\s*RENAME\s+(?:TO\s+|AS\s+)?(?!COLUMN\b|INDEX\b|KEY\b){_NAME}", re.I
)
_OTHER_TABLE = re.compile(
    rf"\b(?:EXCHANGE\s+PARTITION\s+{_IDENT}\s+WITH\s+TABLE|CONVERT\s+PARTITION\s+{_IDENT}\s+"
    rf"TO\s+TABLE|CONVERT\s+TABLE)\s+{_NAME}",
    re.I,
)
_ROWS_WITHOUT_EVENTS = re.compile(
    r"\b(?:(?:DISCARD|IMPORT)\s+(?:PARTITION\s+.*?\s+)?TABLESPACE|"
    r"(?:DROP|TRUNCATE)\s+PARTITION)\b",
    re.I | re.S,
)
_DML = re.compile(r"^(?:INSERT|UPDATE|DELETE|REPLACE|LOAD\s+DATA)\b", re.I)
_NAME_LIST = re.compile(_NAME)


@dataclass(frozen=True)
class DdlTarget:
    """One table a DDL statement touches: ``action`` is one of ``ACTIONS``."""

    action: str
    table: str  # database.table, unquoted


def _qualify(name: str, default_db: str) -> str:
    parts = [p[1:-1].replace("``", "`") if p.startswith("`") else p for p in re.findall(_IDENT, name)]
    if len(parts) == 1:
        return f"{default_db}.{parts[0]}"
    return f"{parts[0]}.{parts[1]}"


def _strip(query: str) -> str:
    return _COMMENTS.sub(" ", query + "\n").strip()


def is_dml(query: str) -> bool:
    """A row change logged as a statement (binlog_format STATEMENT or MIXED)."""
    return bool(_DML.match(_strip(query)))


def _alter(table: str, rest: str, default_db: str) -> list[DdlTarget]:
    if renamed := _ALTER_RENAME_TABLE.search(rest):
        return [DdlTarget("rename", table), DdlTarget("rename", _qualify(renamed.group(1), default_db))]
    if other := _OTHER_TABLE.search(rest):
        return [DdlTarget("rows", table), DdlTarget("rows", _qualify(other.group(1), default_db))]
    if _ROWS_WITHOUT_EVENTS.search(rest):
        return [DdlTarget("rows", table)]
    return [DdlTarget("alter", table)]


def parse_ddl(query: str, default_db: str) -> list[DdlTarget]:
    """The tables a DDL statement affects (empty for statements dbmazz does not follow).

    A plain CREATE TABLE is not followed: the table it creates is empty, or filled by row events
    that follow (CREATE ... SELECT); a temporary table never changes a replicated one.
    """
    text = _strip(query)
    if match := _TRUNCATE.match(text):
        return [DdlTarget("truncate", _qualify(match.group(1), default_db))]
    if match := _ALTER.match(text):
        return _alter(_qualify(match.group(1), default_db), match.group(2), default_db)
    if match := _DROP.match(text):
        if match.group(1):
            return []
        return [
            DdlTarget("drop", _qualify(m.group(1), default_db)) for m in _NAME_LIST.finditer(match.group(2))
        ]
    if match := _REPLACE.match(text):
        return [] if match.group(1) else [DdlTarget("replace", _qualify(match.group(2), default_db))]
    if match := _RENAME.match(text):
        names = [m.group(1) for m in _NAME_LIST.finditer(match.group(1)) if m.group(1).upper() != "TO"]
        return [DdlTarget("rename", _qualify(n, default_db)) for n in names]
    return []
