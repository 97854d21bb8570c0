"""The StarRocks sink: Primary Key tables, Stream Load with a version merge condition, tombstones.

Per source table ``schema.name`` the configured database holds a Primary Key table ``name``: the key
columns first (StarRocks wants them so), the other source columns, ``_dbmazz_version``,
``_dbmazz_commit_ts`` and ``_dbmazz_is_deleted`` (1 = a tombstone: a deleted key, kept so an older
change loaded later cannot resurrect it). Users read live rows with ``WHERE _dbmazz_is_deleted = 0``
(or the ``name_current`` view).

Order independence: every load carries ``merge_condition: _dbmazz_version``, so a row replaces the
stored one only when its version is at least the stored one; deletes are upserts of tombstones for
the same reason (a physical delete would forget the version). Exactly once: each request has a
label derived from (pipeline, batch, table, step, group, part), so a request repeated after a crash
is answered "Label Already Exists" and counts as loaded; an applied-batch record is written last.
The apply is the toolkit's (``toolkit.SinkBase.write_batch``, no transaction); this class provides its hooks.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ...core.errors import Problem, SchemaChangeError, UnmappableTypeError
from ...core.protocols import BatchRef, LoadingModel, SinkCapabilities
from ...core.schema import COMMIT_TS_COLUMN, VERSION_COLUMN, TableSchema
from .._plan import ColumnPlan, RowsStep
from ..toolkit.base import ApplyContext, SinkBase
from ._body import DELETED_COLUMN, Group, groups_of, json_body, label_for, load_headers
from ._client import StarRocksClient
from .config import StarRocksConfig
from .types import StarRocksTypes

__all__ = ["StarRocksSink"]

TABLES = "_dbmazz_tables"
APPLIED = "_dbmazz_applied_batches"
_SCHEMA_WAIT = 120.0  # seconds an ADD COLUMN may take to become visible (a StarRocks schema-change job)


@dataclass(frozen=True)
class TableState:
    """What the sink knows about one source table: its sink table, the columns it holds, the last truncate."""

    table: str
    target: str
    schema: TableSchema  # the sink's logical schema (dropped columns kept)
    truncated_version: int = 0


class StarRocksSink(StarRocksClient, SinkBase[TableState]):
    """Writes ChangeBatches into StarRocks; see the module docstring for the layout and guarantees."""

    name = "starrocks"
    types = StarRocksTypes
    DETAILS = (*SinkBase.DETAILS, "tombstones", "loads", "loads_already_done", "partial_loads")

    def __init__(self, config: StarRocksConfig) -> None:
        StarRocksClient.__init__(self, config)
        SinkBase.__init__(self, config.out_of_range)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> StarRocksSink:
        return cls(StarRocksConfig.from_mapping(config))

    def capabilities(self) -> SinkCapabilities:
        return SinkCapabilities(
            LoadingModel.STAGED_BATCH,
            supports_upsert=True,
            supports_delete=True,
            supports_schema_evolution=True,
            supports_transactions=False,
            max_batch_rows=None,
        )

    def connect(self) -> None:
        self.open()
        db = self.q(self.config.database)
        self.execute(f"CREATE DATABASE IF NOT EXISTS {db}")
        self.execute(f"USE {db}")
        self.execute(
            self._ddl(
                TABLES,
                [
                    "`table_name` VARCHAR(512) NOT NULL",
                    "`target` VARCHAR(512)",
                    "`schema_json` STRING",
                    "`truncated_version` LARGEINT",
                ],
                ["table_name"],
            )
        )
        self.execute(
            self._ddl(
                APPLIED,
                [
                    "`pipeline` VARCHAR(256) NOT NULL",
                    "`batch_id` VARCHAR(256) NOT NULL",
                    "`table_name` VARCHAR(512) NOT NULL",
                    "`rows_written` BIGINT",
                    "`high_water_version` LARGEINT",
                    "`applied_at` DATETIME",
                ],
                ["pipeline", "batch_id", "table_name"],
            )
        )

    def preflight(self, tables: Sequence[str] = ()) -> list[Problem]:
        return self.check_access()

    def _ddl(self, table: str, columns: list[str], key: list[str]) -> str:
        keys = ", ".join(self.q(k) for k in key)
        return (
            f"CREATE TABLE IF NOT EXISTS {self.q(table)} ({', '.join(columns)}) PRIMARY KEY ({keys}) "
            f'DISTRIBUTED BY HASH({keys}) PROPERTIES ("replication_num" = "{int(self.config.replication_num)}")'
        )

    # ---- tables (the toolkit's state hooks)
    def target_name(self, table: str) -> str:
        return table.partition(".")[2] or table

    def load_state(self, table: str) -> TableState | None:
        rows = self.query_rows(
            f"SELECT target, schema_json, truncated_version FROM {TABLES} WHERE table_name = %s", (table,)
        )
        if not rows:
            return None
        target, schema_json, truncated = rows[0]
        return TableState(table, target, TableSchema.from_dict(json.loads(schema_json)), int(truncated or 0))

    def save_state(self, state: TableState) -> None:
        self.execute(
            f"INSERT INTO {TABLES} (table_name, target, schema_json, truncated_version) VALUES (%s, %s, %s, %s)",
            (state.table, state.target, json.dumps(state.schema.to_dict()), state.truncated_version),
        )
        self._states[state.table] = state

    def state_tables(self) -> list[str]:
        return [r[0] for r in self.query_rows(f"SELECT table_name FROM {TABLES} ORDER BY table_name")]

    def new_state(self, schema: TableSchema) -> TableState:
        return TableState(schema.qualified_name, self.target_name(schema.qualified_name), schema)

    def create_target(self, state: TableState) -> TableState:
        """The sink table (key columns first), its ``_current`` view and its state row. Idempotent."""
        schema = state.schema
        for name in schema.primary_key:
            if not self.types.can_be_key(schema.column(name).type):
                raise UnmappableTypeError(
                    schema.qualified_name,
                    name,
                    f"{schema.column(name).type} (as a primary-key column)",
                    "starrocks",
                )
        key = [schema.column(k) for k in schema.primary_key]
        rest = [c for c in schema.columns if c.name not in schema.primary_key]
        cols = [f"{self.q(c.name)} {self.types.native(c.type)} NOT NULL" for c in key]
        cols += [f"{self.q(c.name)} {self.types.native(c.type)} NULL" for c in rest]
        cols += [
            f"{self.q(VERSION_COLUMN)} LARGEINT NOT NULL",
            f"{self.q(COMMIT_TS_COLUMN)} DATETIME NULL",
            f"{self.q(DELETED_COLUMN)} BOOLEAN NOT NULL",
        ]
        self.execute(self._ddl(state.target, cols, list(schema.primary_key)))
        self._create_view(state)
        self.save_state(state)
        return state

    def _create_view(self, state: TableState) -> None:
        cols = ", ".join(self.q(c) for c in [*state.schema.column_names, VERSION_COLUMN, COMMIT_TS_COLUMN])
        self.execute(
            f"CREATE OR REPLACE VIEW {self.q(state.target + '_current')} AS SELECT {cols} "
            f"FROM {self.q(state.target)} WHERE {self.q(DELETED_COLUMN)} = 0"
        )

    # ---- the apply's hooks
    def is_applied(self, ref: BatchRef, table: str) -> bool:
        return bool(
            self.query_rows(
                f"SELECT 1 FROM {APPLIED} WHERE pipeline = %s AND batch_id = %s AND table_name = %s",
                (ref.pipeline, ref.batch_id, table),
            )
        )

    def applied_and_high_water(self, ref: BatchRef, table: str) -> tuple[bool, int | None]:
        """Both in one query (one round trip per batch fewer)."""
        rows = self.query_rows(
            f"SELECT max(high_water_version), sum(CASE WHEN pipeline = %s AND batch_id = %s THEN 1 ELSE 0 END) "
            f"FROM {APPLIED} WHERE table_name = %s",
            (ref.pipeline, ref.batch_id, table),
        )
        high, applied = rows[0] if rows else (None, 0)
        return bool(applied), None if high is None else int(high)

    def record_applied(self, ctx: ApplyContext, rows_written: int, high_water: int | None) -> None:
        self.execute(
            f"INSERT INTO {APPLIED} (pipeline, batch_id, table_name, rows_written, high_water_version, "
            "applied_at) VALUES (%s, %s, %s, %s, %s, %s)",
            (
                ctx.ref.pipeline,
                ctx.ref.batch_id,
                ctx.table,
                rows_written,
                high_water or 0,
                time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
            ),
        )

    def check_plan(self, plan: ColumnPlan, incoming: TableSchema) -> None:
        """A Primary Key table cannot change a key column's type, nor an array's element type, in place."""
        for old, new in plan.widened:
            if new.name in incoming.primary_key or not self.types.can_modify(old.type, new.type):
                raise SchemaChangeError(
                    f"starrocks: column {incoming.qualified_name}.{new.name} changed from {old.type} to "
                    f"{new.type}, which a Primary Key table cannot follow in place (a key column, or an "
                    "array element type)",
                    hint="re-snapshot the table into a new sink table",
                )

    def alter_columns(self, state: TableState, plan: ColumnPlan) -> None:
        """ADD COLUMN / MODIFY COLUMN, each waited for (StarRocks runs one schema change per table at a time).

        StarRocks has neither ADD COLUMN IF NOT EXISTS nor a no-op MODIFY ("Nothing is changed"), so a
        re-run after a crash first reads what the table already has and skips that."""
        present = self._columns(state.target)
        target = self.q(state.target)
        for col in plan.added:
            if col.name not in present:
                self.execute(
                    f"ALTER TABLE {target} ADD COLUMN {self.q(col.name)} {self.types.native(col.type)} NULL"
                )
                self._wait_for_schema_change(state.target)
        for _, new in plan.widened:
            if not self.types.holds(present.get(new.name), new.type):
                self.execute(
                    f"ALTER TABLE {target} MODIFY COLUMN {self.q(new.name)} {self.types.native(new.type)} NULL"
                )
                self._wait_for_schema_change(state.target)
        self._create_view(dataclasses.replace(state, schema=plan.schema))

    def _columns(self, target: str) -> dict[str, tuple[str, int | None, int | None]]:
        """name -> (data_type, numeric precision, numeric scale) as information_schema shows them."""
        rows = self.query_rows(
            "SELECT column_name, data_type, numeric_precision, numeric_scale FROM information_schema.columns "
            "WHERE table_schema = %s AND table_name = %s",
            (self.config.database, target),
        )
        return {r[0]: (str(r[1]), r[2], r[3]) for r in rows}

    def _wait_for_schema_change(self, target: str) -> None:
        """Until the table's schema-change jobs are done (a job that was cancelled fails the batch)."""
        deadline = time.monotonic() + _SCHEMA_WAIT
        while True:
            jobs = self.query_named(f"SHOW ALTER TABLE COLUMN WHERE TableName = {self.literal(target)}")
            pending = [j for j in jobs if str(j.get("State")) not in ("FINISHED", "CANCELLED")]
            if not pending:
                break
            if time.monotonic() > deadline:
                raise SchemaChangeError(
                    f"starrocks: the schema change of {target} did not finish within {_SCHEMA_WAIT:.0f} s "
                    f"(state {pending[-1].get('State')})",
                    hint="SHOW ALTER TABLE COLUMN; re-run the batch once it finished",
                )
            time.sleep(0.5)
        latest = max(jobs, key=lambda j: str(j.get("CreateTime")), default=None)
        if latest is not None and latest.get("State") == "CANCELLED":
            raise SchemaChangeError(
                f"starrocks: the schema change of {target} was cancelled: {latest.get('Msg')}",
                hint="SHOW ALTER TABLE COLUMN for the reason; fix it and re-run the batch",
            )

    def truncate_rows(self, state: TableState, version: int) -> None:
        """Remove rows older than the truncate (its version is saved first, so older replays are skipped).

        Rows at exactly ``version`` stay: the same transaction wrote them after the truncate."""
        self.execute(f"DELETE FROM {self.q(state.target)} WHERE {self.q(VERSION_COLUMN)} < {int(version)}")

    def write_rows(self, state: TableState, step: RowsStep, rows: pa.Table, ctx: ApplyContext) -> int:
        """Rows older than the last truncate are stale; the others go in Stream Loads, one per group of rows
        with the same columns (tombstones, rows with unknown values: partial updates), split in parts."""
        details = ctx.details
        if state.truncated_version and rows.num_rows:
            keep = pc.greater_equal(
                rows.column(VERSION_COLUMN), pa.scalar(state.truncated_version, pa.uint64())
            )
            kept = rows.filter(keep)
            details["stale"] += rows.num_rows - kept.num_rows
            rows = kept
        if rows.num_rows == 0:
            return 0
        for group in groups_of(rows, step.schema, state.schema.column_names):
            if group.unknown:
                details["unknown_values_missing"] += self._missing(state, group)
            details["tombstones" if group.deleted else "upserted"] += group.rows.num_rows
            details["partial_loads"] += int(group.partial)
            self._load_group(state, step.schema, group, ctx.ref, ctx.index, details)
        return rows.num_rows

    def _load_group(
        self,
        state: TableState,
        schema: TableSchema,
        group: Group,
        ref: BatchRef,
        index: int,
        details: dict[str, int],
    ) -> None:
        part_rows = self.config.part_rows
        for part, offset in enumerate(range(0, group.rows.num_rows, part_rows)):
            piece = Group(
                group.tag,
                group.rows.slice(offset, part_rows),
                group.columns,
                group.unknown,
                group.partial,
                group.deleted,
            )
            label = label_for(ref.pipeline, ref.batch_id, state.table, index, group.tag, part)
            result = self.load(
                state.target,
                load_headers(piece, label, self.config.load_timeout),
                json_body(piece, schema),
                state.table,
            )
            details["loads"] += 1
            details["loads_already_done"] += int(result.already_loaded)

    def _missing(self, state: TableState, group: Group) -> int:
        """Unknown values with no live sink row to keep them from (they become NULL): counted, like other sinks."""
        key = list(state.schema.primary_key)
        texts = [
            StarRocksTypes.json_values(group.rows.column(k), state.schema.column(k).type).to_pylist()
            for k in key
        ]
        conditions = [
            " AND ".join(
                f"{self.q(k)} = {self.literal(json.loads(t[i]))}" for k, t in zip(key, texts, strict=True)
            )
            for i in range(group.rows.num_rows)
        ]
        found = 0
        for start in range(0, len(conditions), 500):
            where = " OR ".join(f"({c})" for c in conditions[start : start + 500])
            rows = self.query_rows(
                f"SELECT count(*) FROM {self.q(state.target)} "
                f"WHERE {self.q(DELETED_COLUMN)} = 0 AND ({where})"
            )
            found += int(rows[0][0])
        return (group.rows.num_rows - found) * len(group.unknown)

    # ---- forgetting tombstones (SinkBase.prune_tombstones runs prune_table per table)
    def prune_table(self, state: TableState, below_version: int) -> int:
        """Delete the table's tombstones below ``below_version``; returns how many went.

        A Primary Key table holds one row per key, so the tombstone is the key's only row: deleting it
        cannot let an older one win. A row loaded meanwhile has a version at or above the horizon, which
        the condition keeps. Idempotent: a re-run finds nothing left to delete.
        """
        where = f"{self.q(DELETED_COLUMN)} = 1 AND {self.q(VERSION_COLUMN)} < {int(below_version)}"
        count = int(self.query_rows(f"SELECT count(*) FROM {self.q(state.target)} WHERE {where}")[0][0])
        if count:
            self.execute(f"DELETE FROM {self.q(state.target)} WHERE {where}")
        return count

    # ---- reading
    def high_water_version(self, table: str) -> int | None:
        rows = self.query_rows(
            f"SELECT max(high_water_version) FROM {APPLIED} WHERE table_name = %s", (table,)
        )
        return None if not rows or rows[0][0] is None else int(rows[0][0])

    def row_count(self, table: str) -> int:
        state = self.table_state(table)
        if state is None:
            return 0
        rows = self.query_rows(
            f"SELECT count(*) FROM {self.q(state.target)} WHERE {self.q(DELETED_COLUMN)} = 0"
        )
        return int(rows[0][0])
