"""Applying one compacted rows step inside the transaction: stale rows, tombstones, upserts, unknown values.

Shared by the DuckDB and PostgreSQL sinks through ``SqlSink``; the statements are plain SQL both run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from ..core.schema import (
    COMMIT_TS_COLUMN,
    OP_COLUMN,
    OP_DELETE,
    OP_INSERT,
    UNKNOWN_COLUMN,
    VERSION_COLUMN,
    TableSchema,
)
from ._plan import RowsStep

__all__ = ["META_SCHEMA", "UNKNOWN_KEY", "RowMerge", "TableState", "with_unknown_key"]

META_SCHEMA = "_dbmazz"
UNKNOWN_KEY = "_dbmazz_unknown"  # staged: the unknown column names joined by \x1f, null when all known
_SEP = "\x1f"


@dataclass(frozen=True)
class TableState:
    """What the sink knows about one source table."""

    table: str
    target_schema: str
    target_name: str
    tombstones: str
    schema: TableSchema
    truncated_version: int


class RowMerge:
    """The rows part of ``SqlSink`` (which provides ``q``, ``execute``, ``fetchall``, ``stage``, ``target``,
    ``tomb`` and ``high_water_version``)."""

    upsert_by_replace = (
        False  # True: delete the keys, then a plain INSERT (faster than ON CONFLICT in DuckDB)
    )

    def drop_stale(
        self, staged: str, state: TableState, on_key: str, min_version: int, high_water: int | None
    ) -> int:
        """Remove staged rows older than what the sink holds (a truncate, a live row, a tombstone); returns how many.

        Every version in the sink came from an applied batch, so when the oldest staged row is at or
        above the table's high-water version (``high_water``, read in this transaction) nothing can be
        stale (in-order CDC): the joins are skipped.
        """
        if min_version >= max(high_water or 0, state.truncated_version):
            return 0
        v = self.q(VERSION_COLUMN)
        dropped = self.execute(f"DELETE FROM {staged} w WHERE w.{v} < %s", (state.truncated_version,))
        for table in (self.target(state), self.tomb(state)):
            dropped += self.execute(
                f"DELETE FROM {staged} w USING {table} x WHERE {on_key} AND x.{v} > w.{v}"
            )
        return dropped

    def drop_staged(self, staged: str) -> None:
        self.execute(f"DROP TABLE {staged}")

    def _apply_rows(
        self,
        state: TableState,
        step: RowsStep,
        rows: pa.Table,
        details: dict[str, int],
        high_water: int | None,
    ) -> None:
        """Merge ``rows`` (the step's rows, through the sink's ``out_of_range`` policy) into the table."""
        rows = with_unknown_key(rows)
        ops = rows.column(OP_COLUMN)
        deletes = pc.sum(pc.equal(ops, OP_DELETE)).as_py() or 0
        unknown = rows.column(UNKNOWN_KEY)
        groups = [] if unknown.null_count == len(unknown) else pc.unique(unknown.drop_null()).to_pylist()
        min_version = int(pc.min(rows.column(VERSION_COLUMN)).as_py())
        known: list[bool] = []  # whether the table has tombstones, asked at most once per step

        def tombstones() -> bool:
            if not known:
                known.append(bool(self.fetchall(f"SELECT 1 FROM {self.tomb(state)} LIMIT 1")))
            return known[0]

        if self._append_only(state, rows, min_version, high_water, tombstones) and self.direct_insert(
            state, step.schema, rows
        ):
            details["upserted"] += rows.num_rows
            return
        staged = self.stage(rows, step.schema, state.table)
        on_key = " AND ".join(f"x.{self.q(k)} = w.{self.q(k)}" for k in step.schema.primary_key)
        details["stale"] += self.drop_stale(staged, state, on_key, min_version, high_water)
        self._tombstones(state, staged, on_key, deletes, details, tombstones)
        names = step.schema.column_names
        full = f"{self.q(UNKNOWN_KEY)} IS NULL"
        if self.upsert_by_replace and set(state.schema.column_names) <= set(
            names
        ):  # else keep the other columns
            self.execute(
                f"DELETE FROM {self.target(state)} x USING {staged} w WHERE {on_key} "
                f"AND w.{self.q(OP_COLUMN)} <> {OP_DELETE} AND w.{full}"
            )
            details["upserted"] += self._insert(state, staged, names, full)
        else:
            details["upserted"] += self._upsert(state, staged, names, full)
        for group in groups:  # rows with unknown (unchanged TOAST) values: write the known columns only
            where = f"{self.q(UNKNOWN_KEY)} = %s"
            details["unknown_values_missing"] += self.fetchall(
                f"SELECT count(*) FROM {staged} w WHERE w.{where} AND w.{self.q(OP_COLUMN)} <> {OP_DELETE} "
                f"AND NOT EXISTS (SELECT 1 FROM {self.target(state)} x WHERE {on_key})",
                (group,),
            )[0][0]
            known = [n for n in names if n not in set(group.split(_SEP))]
            details["upserted"] += self._upsert(state, staged, known, where, (group,))
        self.drop_staged(staged)

    def _append_only(
        self,
        state: TableState,
        rows: pa.Table,
        min_version: int,
        high_water: int | None,
        tombstones: Callable[[], bool],
    ) -> bool:
        """Only inserts, all newer than anything applied, every value known, no tombstones, every sink
        column in the batch: such rows can go straight into the table (if none of their keys exists)."""
        if not pc.all(pc.equal(rows.column(OP_COLUMN), OP_INSERT)).as_py():
            return False
        if rows.column(UNKNOWN_KEY).null_count != rows.num_rows:
            return False
        if not set(state.schema.column_names) <= set(rows.column_names):
            return False
        if min_version < max(high_water or 0, state.truncated_version):
            return False
        return not tombstones()

    def direct_insert(self, state: TableState, schema: TableSchema, rows: pa.Table) -> bool:
        """Insert append-only rows straight into the target; return False (having written nothing) if a
        key already exists or the sink has no such path, and the staged merge runs instead."""
        return False

    def _tombstones(
        self,
        state: TableState,
        staged: str,
        on_key: str,
        deletes: int,
        details: dict[str, int],
        tombstones: Callable[[], bool],
    ) -> None:
        """Deletes remove the live row and leave a tombstone; upserts remove the key's tombstone (where the table
        has any: ``tombstones()``, asked before this step's deletes added theirs)."""
        v, op = self.q(VERSION_COLUMN), self.q(OP_COLUMN)
        if deletes:
            details["deleted"] += self.execute(
                f"DELETE FROM {self.target(state)} x USING {staged} w WHERE {on_key} AND w.{op} = {OP_DELETE}"
            )
            keys = ", ".join(self.q(k) for k in state.schema.primary_key)
            self.execute(
                f"INSERT INTO {self.tomb(state)} ({keys}, {v}) SELECT {keys}, {v} FROM {staged} "
                f"WHERE {op} = {OP_DELETE} ON CONFLICT ({keys}) DO UPDATE SET {v} = excluded.{v}"
            )
        if deletes or tombstones():
            self.execute(
                f"DELETE FROM {self.tomb(state)} x USING {staged} w WHERE {on_key} AND w.{op} <> {OP_DELETE}"
            )

    def _insert(self, state: TableState, staged: str, names: list[str], where: str) -> int:
        collist = ", ".join(self.q(c) for c in [*names, VERSION_COLUMN, COMMIT_TS_COLUMN])
        return self.execute(
            f"INSERT INTO {self.target(state)} ({collist}) SELECT {collist} FROM {staged} "
            f"WHERE {self.q(OP_COLUMN)} <> {OP_DELETE} AND {where}"
        )

    def _upsert(
        self, state: TableState, staged: str, names: list[str], where: str, params: Sequence = ()
    ) -> int:
        key = state.schema.primary_key
        cols = [*names, VERSION_COLUMN, COMMIT_TS_COLUMN]
        collist = ", ".join(self.q(c) for c in cols)
        updates = ", ".join(f"{self.q(c)} = excluded.{self.q(c)}" for c in cols if c not in key)
        return self.execute(
            f"INSERT INTO {self.target(state)} ({collist}) SELECT {collist} FROM {staged} "
            f"WHERE {self.q(OP_COLUMN)} <> {OP_DELETE} AND {where} "
            f"ON CONFLICT ({', '.join(self.q(k) for k in key)}) DO UPDATE SET {updates}",
            params,
        )


def with_unknown_key(rows: pa.Table) -> pa.Table:
    """Replace the unknown-columns list by a sortable text key (null when every value is known)."""
    index = rows.column_names.index(UNKNOWN_COLUMN)
    unknown = rows.column(UNKNOWN_COLUMN)
    if unknown.null_count == len(unknown):
        key = pa.nulls(len(unknown), pa.string())
    else:
        key = pc.binary_join(unknown, _SEP)
        key = pc.if_else(pc.equal(pc.utf8_length(key), 0), pa.scalar(None, pa.string()), key)
    return rows.set_column(index, UNKNOWN_KEY, key)
