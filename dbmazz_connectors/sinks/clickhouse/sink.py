"""The ClickHouse sink: ReplacingMergeTree tables, idempotent Arrow inserts, a ``<table>_current`` view.

Per source table ``schema.name`` the configured database holds:

* ``name``: ``ReplacingMergeTree(_dbmazz_version, _dbmazz_is_deleted)`` ordered by the primary key;
  the source columns, ``_dbmazz_version``, ``_dbmazz_commit_ts``, ``_dbmazz_is_deleted`` (1 = a
  tombstone: a deleted key, kept so an older change applied later cannot resurrect it);
* ``name_current``: the view users query, ``SELECT <columns>, _dbmazz_version, _dbmazz_commit_ts
  FROM name FINAL WHERE _dbmazz_is_deleted = 0`` (one live row per key, no merge needed).

Exactly once without transactions: every insert carries a deduplication token per (pipeline,
batch, table, step, part), the tables keep ``non_replicated_deduplication_window`` tokens, and an
applied-batch record is written after the data; re-applying a batch after a crash at any point
re-sends only no-op inserts and idempotent DDL. Per key the highest version wins (the engine's
version column), on equal versions the later insert. The apply is the toolkit's
(``toolkit.SinkBase.write_batch``, no transaction: ``batch_scope`` opens nothing); this class
provides its hooks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

from ...core.compaction import conform
from ...core.errors import Problem
from ...core.protocols import BatchRef, LoadingModel, SinkCapabilities
from ...core.schema import COMMIT_TS_COLUMN, VERSION_COLUMN, TableSchema
from ...core.types import Kind
from .._plan import ColumnPlan, RowsStep
from ..toolkit.base import ApplyContext, SinkBase
from ._client import ClickHouseClient
from ._meta import APPLIED, META_TABLES_DDL, TABLES, TableState, applied_row, parse_state, state_row
from ._rows import DELETED_COLUMN, drop_stale, fill_unknown, prepare_rows, to_block
from .config import ClickHouseConfig
from .types import ClickHouseTypes

__all__ = ["ClickHouseSink"]

_LWD = {"lightweight_deletes_sync": 2, "mutations_sync": 2}


class ClickHouseSink(ClickHouseClient, SinkBase[TableState]):
    """Writes ChangeBatches into ClickHouse; see the module docstring for the layout and guarantees."""

    name = "clickhouse"
    types = ClickHouseTypes
    DETAILS = (*SinkBase.DETAILS, "tombstones")

    def __init__(self, config: ClickHouseConfig) -> None:
        ClickHouseClient.__init__(self, config)
        SinkBase.__init__(self, config.out_of_range)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ClickHouseSink:
        return cls(ClickHouseConfig.from_mapping(config))

    def capabilities(self) -> SinkCapabilities:
        return SinkCapabilities(
            LoadingModel.STREAMING,
            supports_upsert=True,
            supports_delete=True,
            supports_schema_evolution=True,
            supports_transactions=False,
            max_batch_rows=None,
        )

    def connect(self) -> None:
        self.open()
        for ddl in META_TABLES_DDL:
            self.command(ddl)

    def preflight(self, tables: Sequence[str] = ()) -> list[Problem]:
        """Reachability, credentials, database and DDL rights (every table goes to one database)."""
        return self.check_access()

    # ---- tables (the toolkit's state hooks)
    def target_name(self, table: str) -> str:
        return table.partition(".")[2] or table

    def load_state(self, table: str) -> TableState | None:
        rows = self.query_rows(
            f"SELECT target, schema_json, truncated_version FROM {TABLES} FINAL WHERE table_name = %(t)s",
            {"t": table},
        )
        return parse_state(table, *rows[0]) if rows else None

    def save_state(self, state: TableState) -> None:
        self.insert(TABLES, state_row(state), token=None)
        self._states[state.table] = state

    def state_tables(self) -> list[str]:
        return [r[0] for r in self.query_rows(f"SELECT table_name FROM {TABLES} FINAL ORDER BY table_name")]

    def new_state(self, schema: TableSchema) -> TableState:
        return TableState(schema.qualified_name, self.target_name(schema.qualified_name), schema)

    def create_target(self, state: TableState) -> TableState:
        """The sink table, its ``_current`` view and its state row. Idempotent."""
        self._create_target(state.target, state.schema)
        self._create_view(state)
        self.save_state(state)
        return state

    def _create_target(self, target: str, schema: TableSchema) -> None:
        cols = [
            f"{self.q(c.name)} {self.types.native(c.type, c.name not in schema.primary_key)}"
            for c in schema.columns
        ]
        self.command(
            f"CREATE TABLE IF NOT EXISTS {self.q(target)} ({', '.join(cols)}, "
            f"{self.q(VERSION_COLUMN)} UInt64, {self.q(COMMIT_TS_COLUMN)} DateTime64(6, 'UTC'), "
            f"{self.q(DELETED_COLUMN)} UInt8) "
            f"ENGINE = ReplacingMergeTree({self.q(VERSION_COLUMN)}, {self.q(DELETED_COLUMN)}) "
            f"ORDER BY ({', '.join(self.q(k) for k in schema.primary_key)}) "
            f"SETTINGS non_replicated_deduplication_window = {int(self.config.dedup_window)}"
        )

    def _rebuild(self, state: TableState, schema: TableSchema) -> None:
        """Copy the table into a new one of ``schema`` and swap them (a sorting-key column cannot be altered).

        Safe to repeat after a crash: the copy is made again from whichever table holds the name."""
        work = state.target + "__dbmazz_rebuild"
        self.command(f"DROP TABLE IF EXISTS {self.q(work)} SYNC")
        self._create_target(work, schema)
        cols = ", ".join(
            self.q(c) for c in [*state.schema.column_names, VERSION_COLUMN, COMMIT_TS_COLUMN, DELETED_COLUMN]
        )
        self.command(f"INSERT INTO {self.q(work)} ({cols}) SELECT {cols} FROM {self.q(state.target)}")
        self.command(f"EXCHANGE TABLES {self.q(state.target)} AND {self.q(work)}")
        self.command(f"DROP TABLE {self.q(work)} SYNC")

    def _create_view(self, state: TableState) -> None:
        cols = ", ".join(self.q(c) for c in [*state.schema.column_names, VERSION_COLUMN, COMMIT_TS_COLUMN])
        self.command(
            f"CREATE OR REPLACE VIEW {self.q(state.target + '_current')} AS SELECT {cols} "
            f"FROM {self.q(state.target)} FINAL WHERE {self.q(DELETED_COLUMN)} = 0"
        )

    # ---- the apply's hooks
    def is_applied(self, ref: BatchRef, table: str) -> bool:
        return bool(
            self.query_rows(
                f"SELECT 1 FROM {APPLIED} FINAL WHERE pipeline = %(p)s AND batch_id = %(b)s AND table_name = %(t)s",
                {"p": ref.pipeline, "b": ref.batch_id, "t": table},
            )
        )

    def applied_and_high_water(self, ref: BatchRef, table: str) -> tuple[bool, int | None]:
        """Both in one query (one round trip per batch fewer)."""
        rows = self.query_rows(
            f"SELECT maxOrNull(high_water_version), countIf(pipeline = %(p)s AND batch_id = %(b)s) "
            f"FROM {APPLIED} FINAL WHERE table_name = %(t)s",
            {"p": ref.pipeline, "b": ref.batch_id, "t": table},
        )
        high, applied = rows[0] if rows else (None, 0)
        return bool(applied), None if high is None else int(high)

    def record_applied(self, ctx: ApplyContext, rows_written: int, high_water: int | None) -> None:
        self.insert(
            APPLIED,
            applied_row(ctx.ref.pipeline, ctx.ref.batch_id, ctx.table, rows_written, high_water or 0),
            token=None,
        )

    def alter_columns(self, state: TableState, plan: ColumnPlan) -> None:
        """Each statement is idempotent (a re-run after a crash repeats it); the view follows the new columns."""
        target = self.q(state.target)
        if any(new.name in state.schema.primary_key for _, new in plan.widened):
            self._rebuild(state, plan.schema)  # a widened key column; the statements below are then no-ops
        for col in plan.added:
            self.command(
                f"ALTER TABLE {target} ADD COLUMN IF NOT EXISTS {self.q(col.name)} "
                f"{self.types.native(col.type)}",
                settings=_LWD,
            )
        for _, new in plan.widened:
            if new.name in state.schema.primary_key:
                continue  # rebuilt above
            self.command(
                f"ALTER TABLE {target} MODIFY COLUMN {self.q(new.name)} {self.types.native(new.type)}",
                settings=_LWD,
            )
        self._create_view(dataclasses.replace(state, schema=plan.schema))

    def truncate_rows(self, state: TableState, version: int) -> None:
        """Remove rows older than the truncate (its version is saved first, so older replays are skipped).

        Rows at exactly ``version`` stay: they were written after the truncate by the same
        transaction (rows before it are dropped by the plan), so a re-apply keeps them.
        """
        self.command(
            f"DELETE FROM {self.q(state.target)} WHERE {self.q(VERSION_COLUMN)} < {int(version)}",
            settings=_LWD,
        )

    def write_rows(self, state: TableState, step: RowsStep, rows: pa.Table, ctx: ApplyContext) -> int:
        """Write one step's (guarded) rows: unknown values filled from the sink, then idempotent inserts."""
        details = ctx.details
        rows, stale = drop_stale(rows, state.truncated_version)
        details["stale"] += stale
        if rows.num_rows == 0:
            return 0
        schema, kept = _with_kept_columns(step.schema, state.schema)
        rows = conform(rows, schema) if kept else rows
        rows = prepare_rows(rows, step.schema)
        rows, missing = fill_unknown(
            rows, schema, lambda k, c, keys: self._current_rows(state, k, c, keys), kept
        )
        details["unknown_values_missing"] += missing
        block = to_block(rows, schema)
        tombstones = int(pa.compute.sum(block.column(DELETED_COLUMN)).as_py() or 0)
        details["tombstones"] += tombstones
        details["upserted"] += block.num_rows - tombstones
        part_rows = self.config.part_rows
        for part, offset in enumerate(range(0, block.num_rows, part_rows)):
            self.insert(
                state.target,
                block.slice(offset, part_rows),
                token=f"{ctx.ref.pipeline}/{ctx.ref.batch_id}/{state.table}/{ctx.index}/{part}",
            )
        return rows.num_rows

    def _current_rows(self, state: TableState, key: list[str], names: list[str], keys: pa.Table) -> pa.Table:
        """The sink's live values of ``names`` for ``keys`` (sent as external data, never as Python values)."""

        def value(c: str) -> str:
            return self.types.read_expr(self.q(c), state.schema.column(c).type)

        structure = ", ".join(f"{self.q(k)} {self._key_structure(state, k)}" for k in key)
        return self.query_arrow(
            f"SELECT {', '.join(f'{value(c)} AS {self.q(c)}' for c in [*key, *names])} "
            f"FROM {self.q(state.target)} FINAL WHERE ({', '.join(value(k) for k in key)}) IN "
            f"(SELECT {', '.join(self.q(k) for k in key)} FROM _dbmazz_keys) AND {self.q(DELETED_COLUMN)} = 0",
            tables={"_dbmazz_keys": (keys, structure)},
        )

    def _key_structure(self, state: TableState, column: str) -> str:
        logical = state.schema.column(column).type
        if logical.kind in (Kind.UUID, Kind.ENUM):
            return "String"  # uuids are compared as text; enum labels are plain strings
        return self.types.native(logical, nullable=False)

    # ---- forgetting tombstones (SinkBase.prune_tombstones runs prune_table per table)
    def prune_table(self, state: TableState, below: int) -> int:
        """Forget keys whose winning row is a tombstone below ``below``; returns how many.

        Deleting only the tombstone would let an older live row of the key, still in an unmerged part,
        win again. So the keys are fixed first in a work table (the engine the sink's grants already
        cover; one row per key), then two mutations run, each waited for:
        the older live rows of those keys go first (the tombstone still wins meanwhile), then the
        tombstones. A mutation runs part by part; killed half-way (or between the two), the view never
        shows a forgotten key, and a re-run picks the same keys again (their winner is still a tombstone).
        """
        target, work = self.q(state.target), self.q(state.target + "__dbmazz_prune")
        key = ", ".join(self.q(k) for k in state.schema.primary_key)
        deleted, version = self.q(DELETED_COLUMN), self.q(VERSION_COLUMN)
        self.command(f"DROP TABLE IF EXISTS {work} SYNC")
        # not FINAL: it hides tombstones. The winner is the highest version; at a tie a live row counts as winning
        self.command(
            f"CREATE TABLE {work} ENGINE = ReplacingMergeTree ORDER BY ({key}) AS SELECT {key} FROM {target} "
            f"GROUP BY {key} HAVING max({version}) < {below} "
            f"AND argMax({deleted}, ({version}, 1 - {deleted})) = 1"
        )
        forgotten = int(self.query_rows(f"SELECT count() FROM {work}")[0][0])
        if forgotten:
            older = f"{version} < {below} AND ({key}) IN (SELECT {key} FROM {work})"
            self.command(f"ALTER TABLE {target} DELETE WHERE {deleted} = 0 AND {older}", settings=_LWD)
            self.command(f"ALTER TABLE {target} DELETE WHERE {deleted} = 1 AND {older}", settings=_LWD)
        self.command(f"DROP TABLE IF EXISTS {work} SYNC")
        return forgotten

    # ---- reading
    def high_water_version(self, table: str) -> int | None:
        rows = self.query_rows(
            f"SELECT maxOrNull(high_water_version) FROM {APPLIED} FINAL WHERE table_name = %(t)s",
            {"t": table},
        )
        return None if not rows or rows[0][0] is None else int(rows[0][0])

    def row_count(self, table: str) -> int:
        state = self.table_state(table)
        if state is None:
            return 0
        rows = self.query_rows(
            f"SELECT count() FROM {self.q(state.target)} FINAL WHERE {self.q(DELETED_COLUMN)} = 0"
        )
        return int(rows[0][0])


def _with_kept_columns(
    rows_schema: TableSchema, sink_schema: TableSchema
) -> tuple[TableSchema, tuple[str, ...]]:
    """The rows' schema plus the columns the sink keeps after the source dropped them."""
    kept = tuple(c for c in sink_schema.column_names if c not in rows_schema.column_index)
    if not kept:
        return rows_schema, ()
    columns = rows_schema.columns + tuple(sink_schema.column(c) for c in kept)
    return TableSchema(rows_schema.schema, rows_schema.name, columns, rows_schema.primary_key), kept
