"""Catalog look-ups: tables, their columns and primary keys, types; table schemas built from them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ...core.errors import ConfigError, MissingPrimaryKeyError, UnmappableTypeError
from ...core.schema import Column, TableSchema
from ...core.types import Kind, LogicalType
from ._rows import RelationInfo
from .config import NO_SELECTION, ColumnSelection
from .decoder import RelationMessage
from .types import PgType, UnmappedType, logical_type

__all__ = ["Catalog", "TableInfo", "split_table"]


def split_table(qualified: str) -> tuple[str, str]:
    schema, _, name = qualified.partition(".")
    return schema, name


@dataclass(frozen=True)
class TableInfo:
    qualified_name: str
    oid: int
    owner: str
    replica_identity: str
    columns: tuple[tuple[str, int, int], ...]  # (name, type oid, typmod), in attnum order
    primary_key: tuple[str, ...]
    generated: tuple[str, ...] = ()  # stored generated columns: PostgreSQL 15 does not publish them
    kind: str = "r"  # relkind: r table, p partitioned table
    # columns with a default (or an identity): one that appears (ADD COLUMN ... DEFAULT) filled the rows that
    # existed before it, in the source only (no change in the WAL)
    defaulted: tuple[str, ...] = ()


_TABLE_SQL = """
SELECT c.oid, pg_get_userbyid(c.relowner), c.relreplident,
  ARRAY(SELECT a.attname FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0
        AND NOT a.attisdropped AND a.attgenerated = '' ORDER BY a.attnum),
  ARRAY(SELECT a.atttypid::int8 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0
        AND NOT a.attisdropped AND a.attgenerated = '' ORDER BY a.attnum),
  ARRAY(SELECT a.atttypmod FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0
        AND NOT a.attisdropped AND a.attgenerated = '' ORDER BY a.attnum),
  ARRAY(SELECT a.attname FROM pg_index i CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(attnum, n)
        JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
        WHERE i.indrelid = c.oid AND i.indisprimary ORDER BY k.n),
  ARRAY(SELECT a.attname FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0
        AND NOT a.attisdropped AND a.attgenerated <> '' ORDER BY a.attnum),
  c.relkind::text,
  ARRAY(SELECT a.attname FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
        AND a.attgenerated = '' AND (a.atthasdef OR a.attidentity <> '') ORDER BY a.attnum)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')
"""

_TYPE_SQL = """
SELECT t.oid::int8, t.typname, t.typtype, t.typcategory, t.typelem::int8, t.typbasetype::int8, t.typtypmod,
  ARRAY(SELECT e.enumlabel::text FROM pg_enum e WHERE e.enumtypid = t.oid ORDER BY e.enumsortorder)
FROM pg_type t WHERE t.oid = %s
"""


class Catalog:
    """Reads the catalog through one (autocommit) connection; caches types per oid."""

    def __init__(self, conn, selection: Callable[[str], ColumnSelection] | None = None) -> None:
        self._conn = conn
        self._types: dict[int, PgType] = {}
        self._selection = selection or (lambda table: NO_SELECTION)

    def pg_type(self, oid: int) -> PgType:
        if oid not in self._types:
            row = self._conn.execute(_TYPE_SQL, (oid,)).fetchone()
            if row is None:
                self._types[oid] = PgType(oid, f"oid {oid}", "?", "?", 0, 0, -1)
            else:
                self._types[oid] = PgType(
                    row[0], row[1], row[2], row[3], row[4], row[5], row[6], tuple(row[7])
                )
        return self._types[oid]

    def table(self, qualified: str) -> TableInfo | None:
        row = self._conn.execute(_TABLE_SQL, split_table(qualified)).fetchone()
        if row is None:
            return None
        oid, owner, replident, names, oids, typmods, pk, generated, kind, defaulted = row
        return TableInfo(
            qualified,
            oid,
            owner,
            replident,
            tuple(zip(names, oids, typmods, strict=True)),
            tuple(pk),
            tuple(generated),
            kind,
            tuple(defaulted),
        )

    def schema_of(self, info: TableInfo) -> TableSchema:
        """The table's schema now; raises MissingPrimaryKeyError / UnmappableTypeError."""
        if not info.primary_key:
            raise MissingPrimaryKeyError(info.qualified_name)
        return self._schema(info.qualified_name, info.columns, info.primary_key)[0]

    def _schema(
        self, qualified: str, columns, primary_key: tuple[str, ...]
    ) -> tuple[TableSchema, tuple[int, ...]]:
        """The schema of the columns that reach the sinks, and their positions among ``columns``."""
        schema, name = split_table(qualified)
        selection = self._selection(qualified)
        excluded_keys = sorted(selection.exclude & set(primary_key))
        if excluded_keys:
            raise ConfigError(
                f"columns of {qualified}: primary key column(s) {', '.join(excluded_keys)} "
                "cannot be excluded",
                hint="remove them from 'exclude'",
            )
        built, kept = [], []
        for position, (column, oid, typmod) in enumerate(columns):
            if column in selection.exclude:
                continue
            built.append(
                self._column(qualified, column, oid, typmod, primary_key, column in selection.as_text)
            )
            kept.append(position)
        return TableSchema(schema, name, tuple(built), primary_key), tuple(kept)

    def _column(
        self, qualified: str, column: str, oid: int, typmod: int, primary_key, as_text: bool
    ) -> Column:
        if as_text:
            ltype = LogicalType.of(Kind.STRING)
        else:
            try:
                ltype = logical_type(oid, typmod, self.pg_type)
            except UnmappedType as exc:
                raise UnmappableTypeError(qualified, column, exc.type_name, "postgres") from None
        # Only key columns are declared NOT NULL: a later DROP NOT NULL sends no Relation message.
        return Column(column, ltype, nullable=column not in primary_key, source_type=self.pg_type(oid).name)

    def relation(self, message: RelationMessage, wanted: frozenset[str]) -> RelationInfo | None:
        """The RelationInfo of a pgoutput Relation message, or None for a table not in ``wanted``."""
        qualified = f"{message.namespace}.{message.name}"
        if qualified not in wanted:
            return None
        names = [c[1] for c in message.columns]
        info = self.table(qualified)
        if info is not None and info.primary_key and all(k in names for k in info.primary_key):
            primary_key = info.primary_key
        else:  # dropped or re-keyed since: fall back on the replica identity columns the message flags
            primary_key = tuple(c[1] for c in message.columns if c[0] & 1)
        if not primary_key:
            raise MissingPrimaryKeyError(qualified)
        schema, kept = self._schema(qualified, [(c[1], c[2], c[3]) for c in message.columns], primary_key)
        keys = tuple(names.index(k) for k in primary_key)
        kept = kept if len(kept) < len(names) else ()  # (): every column, in order (no gather when decoding)
        return RelationInfo(message.relid, schema, message.replica_identity, keys, kept, len(names))
