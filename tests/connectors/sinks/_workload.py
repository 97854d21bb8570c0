"""A mixed change-log workload for sink tests, with the source state it must converge to.

API (shared by every sink's tests)::

    wl = mixed_workload(seed=1)            # deterministic; ~200 keys, 6 CDC batches
    wl.batches                              # list[WorkloadBatch], CDC batches in source order
    wl.snapshots                            # list[WorkloadBatch], snapshot-style insert batches (op 0)
    wl.interleaved()                        # CDC batches in order with the snapshots mixed in
    wl.final_schema                         # TableSchema at the end (ORDERS + the added column)
    wl.expected                             # final source rows: list of tuples in final_schema
                                            #   column order, sorted by primary key
    batch.change_batch()                    # the ChangeBatch (engine/sink input) of one batch
    batch.batch_id                          # a sortable id; snapshot ids start with "snap-"
    write_batches(changelog, "p", wl.batches)   # stage batches in a ChangeLog -> their ids
    source_rows_after(wl.batches[:3], tmpdir)   # (schema, rows) of the source after those batches
    assert_sink_equals(rows_from_sink, wl.expected)   # row-by-row comparison with readable diffs

What the CDC batches contain, in this order (each ``Rows`` event is one source transaction):

0. inserts of the initial keys;
1. updates, deletes, inserts, primary-key updates (delete old key + insert new key in one
   transaction), one key updated three times, and updates whose ``note`` is unknown
   (an unchanged TOAST value: null in ``note`` and ``["note"]`` in ``_dbmazz_unknown_columns``);
2. the same mix again (unknown-``note`` updates of keys last written in earlier batches, so the
   sink must keep its own value);
3. a few changes, a ``Truncate``, then inserts after it (same batch);
4. a ``SchemaChange`` adding ``discount`` (int64), then changes that set it;
5. the mix again under the wider schema.

Versions grow by transaction (``_dbmazz_version``), commit timestamps follow them. Snapshot
batches hold every live row at a point between two CDC batches as inserts versioned at that
point (the version of the last transaction they include) under the schema of that moment; one
is taken before the truncate, one after the added column. Applying CDC batches in order with
snapshots anywhere in between must give ``expected``.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pyarrow as pa

from dbmazz_connectors.changelog import ChangeLog
from dbmazz_connectors.core import (
    OP_DELETE,
    OP_INSERT,
    OP_UPDATE,
    ChangeBatch,
    Column,
    Heartbeat,
    LogicalType,
    Rows,
    SchemaChange,
    TableEvent,
    TableSchema,
    Truncate,
)
from dbmazz_connectors.sources.postgres.position import Lsn

__all__ = [
    "ORDERS",
    "ORDERS_WIDER",
    "WorkloadBatch",
    "Workload",
    "mixed_workload",
    "write_batches",
    "assert_sink_equals",
    "rows_table",
    "source_rows_after",
]

ORDERS = TableSchema(
    "public",
    "orders",
    (
        Column("id", LogicalType.of("int64"), nullable=False),
        Column("qty", LogicalType.of("int32")),
        Column("price", LogicalType.decimal(12, 2)),
        Column("note", LogicalType.of("string")),
        Column("status", LogicalType.of("string")),
        Column("updated_at", LogicalType.of("timestamptz")),
    ),
    ("id",),
)
ORDERS_WIDER = TableSchema(
    "public", "orders", ORDERS.columns + (Column("discount", LogicalType.of("int64")),), ("id",)
)

_EPOCH_US = 1_700_000_000_000_000
_STATUSES = ("new", "paid", "shipped", "returned")


def _commit_ts_us(version: int) -> int:
    return _EPOCH_US + version * 1000


def rows_table(schema: TableSchema, changes: Sequence[tuple[int, int, dict, list[str] | None]]) -> pa.Table:
    """Arrow rows of ``schema.arrow_schema()`` from ``(op, version, values, unknown_columns)``."""
    data: dict[str, list] = {
        c.name: [values.get(c.name) for _, _, values, _ in changes] for c in schema.columns
    }
    data["_dbmazz_op"] = [op for op, _, _, _ in changes]
    data["_dbmazz_version"] = [version for _, version, _, _ in changes]
    data["_dbmazz_commit_ts"] = [_commit_ts_us(version) for _, version, _, _ in changes]
    data["_dbmazz_unknown_columns"] = [unknown for _, _, _, unknown in changes]
    return pa.Table.from_pydict(data, schema=schema.arrow_schema())


@dataclass
class WorkloadBatch:
    """One batch of the workload: its id, the table schema at its start and its events in order."""

    batch_id: str
    schema: TableSchema
    events: list[TableEvent] = field(default_factory=list)
    end_version: int = 0

    @property
    def table(self) -> str:
        return self.schema.qualified_name

    def change_batch(self) -> ChangeBatch:
        return ChangeBatch(self.table, self.schema, list(self.events))


@dataclass
class Workload:
    batches: list[WorkloadBatch]
    snapshots: list[WorkloadBatch]
    final_schema: TableSchema
    expected: list[tuple]

    def interleaved(self) -> list[WorkloadBatch]:
        """CDC batches in order; the late snapshot first, the early one after the truncate batch."""
        early, late = self.snapshots
        order = [late, *self.batches[:4], early, *self.batches[4:]]
        return order


class _Source:
    """A plain Python model of the source table: the state every sink must equal."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.schema = ORDERS
        self.rows: dict[int, dict] = {}
        self.version = 1_000
        self.next_id = 1
        self.events: list[TableEvent] = []

    # one transaction = one Rows event
    def txn(self, changes: list[tuple[str, int | None]]) -> None:
        self.version += 7
        out: list[tuple[int, int, dict, list[str] | None]] = []
        for kind, key in changes:
            out.extend(getattr(self, f"_{kind}")(key))
        if out:
            self.events.append(Rows(self.schema, rows_table(self.schema, out)))

    def _values(self, key: int) -> dict:
        values = {
            "id": key,
            "qty": self.rng.randint(1, 500),
            "price": Decimal(self.rng.randint(0, 10_000_000)) / 100,
            "note": self.rng.choice(
                ["", "gift", "x" * self.rng.randint(1, 300), None, "ünïcödé 'quoted' \"d\""]
            ),
            "status": self.rng.choice(_STATUSES),
            "updated_at": datetime.fromtimestamp(_commit_ts_us(self.version) / 1e6, UTC)
            + timedelta(microseconds=self.rng.randint(0, 999)),
        }
        if "discount" in self.schema.column_index:
            values["discount"] = self.rng.choice([None, self.rng.randint(-(2**40), 2**40)])
        return values

    def _insert(self, key: int | None) -> list:
        key = key if key is not None else self._new_key()
        self.rows[key] = self._values(key)
        return [(OP_INSERT, self.version, dict(self.rows[key]), None)]

    def _update(self, key: int | None) -> list:
        key = key if key is not None else self.pick()
        new = self._values(key)
        self.rows[key] = new
        return [(OP_UPDATE, self.version, dict(new), None)]

    def _update_unknown_note(self, key: int | None) -> list:
        key = key if key is not None else self.pick()
        new = self._values(key)
        new["note"] = self.rows[key]["note"]  # unchanged TOAST value: the source keeps it
        self.rows[key] = new
        return [(OP_UPDATE, self.version, {**new, "note": None}, ["note"])]

    def _delete(self, key: int | None) -> list:
        key = key if key is not None else self.pick()
        del self.rows[key]
        return [(OP_DELETE, self.version, {"id": key}, None)]

    def _pk_update(self, key: int | None) -> list:
        old = key if key is not None else self.pick()
        values = self.rows.pop(old)
        new_key = self._new_key()
        self.rows[new_key] = {**values, "id": new_key, "qty": (values["qty"] or 0) + 1}
        return [
            (OP_DELETE, self.version, {"id": old}, None),
            (OP_INSERT, self.version, dict(self.rows[new_key]), None),
        ]

    def _new_key(self) -> int:
        self.next_id += self.rng.randint(1, 3)
        return self.next_id

    def pick(self) -> int:
        return self.rng.choice(sorted(self.rows))

    def truncate(self) -> None:
        self.version += 7
        self.rows.clear()
        self.events.append(Truncate(self.schema.qualified_name, self.version, _commit_ts_us(self.version)))

    def add_column(self) -> None:
        self.version += 7
        self.schema = ORDERS_WIDER
        for values in self.rows.values():
            values["discount"] = None
        self.events.append(SchemaChange(ORDERS_WIDER, self.version, "ALTER TABLE orders ADD discount bigint"))

    def snapshot(self, batch_id: str) -> WorkloadBatch:
        data = rows_table(
            self.schema, [(OP_INSERT, self.version, dict(v), None) for _, v in sorted(self.rows.items())]
        )
        return WorkloadBatch(batch_id, self.schema, [Rows(self.schema, data)], self.version)

    def expected(self) -> list[tuple]:
        names = self.schema.column_names
        return [tuple(values.get(n) for n in names) for _, values in sorted(self.rows.items())]


def _mix(src: _Source, keys: int) -> None:
    """Updates, deletes, inserts, PK updates, a key updated three times, unknown-note updates."""
    for _ in range(keys // 10):
        src.txn([("update", None), ("update", None), ("insert", None)])
    for _ in range(keys // 20):
        src.txn([("delete", None)])
    src.txn([("pk_update", None) for _ in range(3)])
    hot = src.pick()
    for _ in range(3):
        src.txn([("update", hot)])
    src.txn([("update_unknown_note", None) for _ in range(5)])
    src.txn([("update_unknown_note", hot)])
    src.txn([("insert", None), ("update_unknown_note", None)])


def mixed_workload(seed: int = 1, keys: int = 200) -> Workload:
    """The workload described in the module docstring; deterministic for a seed."""
    src = _Source(seed)
    batches: list[WorkloadBatch] = []
    snapshots: list[WorkloadBatch] = []

    def cut(index: int, start_schema: TableSchema) -> None:
        batches.append(WorkloadBatch(f"b{index:04d}", start_schema, list(src.events), src.version))
        src.events.clear()

    for chunk in range(0, keys, 50):
        src.txn([("insert", None) for _ in range(min(50, keys - chunk))])
    cut(0, ORDERS)
    _mix(src, keys)
    cut(1, ORDERS)
    _mix(src, keys)
    cut(2, ORDERS)
    snapshots.append(src.snapshot("snap-early"))
    src.txn([("update", None), ("delete", None)])
    src.truncate()
    for chunk in range(0, keys, 50):
        src.txn([("insert", None) for _ in range(min(50, keys - chunk))])
    src.txn([("update", None), ("update_unknown_note", None)])
    cut(3, ORDERS)
    start = src.schema
    src.add_column()
    _mix(src, keys)
    cut(4, start)
    snapshots.append(src.snapshot("snap-late"))
    _mix(src, keys)
    cut(5, ORDERS_WIDER)
    return Workload(batches, snapshots, src.schema, src.expected())


def write_batches(changelog: ChangeLog, pipeline: str, batches: Iterable[WorkloadBatch]) -> list[str]:
    """Stage each batch in the change log (one change-log batch each); returns the batch ids in order."""
    ids = []
    for batch in batches:
        writer = changelog.writer(pipeline, batch.batch_id, Lsn(0))
        writer.declare_table(batch.schema)
        for event in batch.events:
            writer.add(event)
        writer.add(Heartbeat(Lsn(batch.end_version)))
        writer.commit()
        ids.append(batch.batch_id)
    return ids


def assert_sink_equals(
    actual: Iterable[Sequence], expected: Sequence[Sequence], *, key_len: int = 1, show: int = 10
) -> None:
    """Compare rows (tuples in the same column order) by key; fail with the first ``show`` differences."""
    got = {tuple(r[:key_len]): tuple(r) for r in actual}
    want = {tuple(r[:key_len]): tuple(r) for r in expected}
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    differ = sorted(k for k in set(want) & set(got) if got[k] != want[k])
    if not (missing or extra or differ):
        return
    lines = [
        f"sink differs from source: {len(missing)} missing, {len(extra)} extra, {len(differ)} different "
        f"(source {len(want)} rows, sink {len(got)} rows)"
    ]
    lines += [f"  missing {want[k]}" for k in missing[:show]]
    lines += [f"  extra   {got[k]}" for k in extra[:show]]
    for k in differ[:show]:
        cols = [i for i, (a, b) in enumerate(zip(got[k], want[k], strict=False)) if a != b]
        lines.append(
            f"  key {k}: columns {cols}: sink {[got[k][i] for i in cols]} source {[want[k][i] for i in cols]}"
        )
    raise AssertionError("\n".join(lines))


def source_rows_after(batches: Sequence[WorkloadBatch], root: str) -> tuple[TableSchema, list[tuple]]:
    """The source state after ``batches`` (folded through a scratch change log under ``root``)."""
    from dbmazz_connectors.engine import fold_table

    log = ChangeLog(root)
    write_batches(log, "state", batches)
    schema, state = fold_table(log, "state", batches[0].table)
    assert schema is not None
    names = schema.column_names
    rows = state.to_pylist() if state is not None else []
    return schema, sorted((tuple(r[n] for n in names) for r in rows), key=lambda r: r[0])
