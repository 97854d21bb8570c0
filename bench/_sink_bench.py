"""The synthetic orders change log for sink benchmarks, and what a sink's bench target provides.

A sink's bench module (``bench/_sink_bench_<name>.py``) defines ``target(workdir)``: a context
manager that starts whatever the sink needs and yields a ``BenchTarget``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dbmazz_connectors.changelog import ChangeLog
from dbmazz_connectors.core import (
    OP_DELETE,
    OP_INSERT,
    OP_UPDATE,
    Column,
    Heartbeat,
    LogicalType,
    Rows,
    TableSchema,
    compact,
)
from dbmazz_connectors.sources.postgres.position import Lsn

__all__ = ["ORDERS", "BenchTarget", "orders_workload", "stage_workload"]

ORDERS = TableSchema(
    "public",
    "orders",
    (
        Column("id", LogicalType.of("int64"), nullable=False),
        Column("customer_id", LogicalType.of("int32")),
        Column("amount", LogicalType.decimal(12, 2)),
        Column("status", LogicalType.of("string")),
        Column("note", LogicalType.of("string")),
        Column("created_at", LogicalType.of("timestamptz")),
        Column("payload", LogicalType.of("json")),
    ),
    ("id",),
)


@dataclass
class BenchTarget:
    """``sink_config``: the mapping for ``create_sink`` (without ``pipeline``).
    ``raw_load(final_rows, schema) -> seconds``: bulk-load the final rows (data columns plus
    ``_dbmazz_version``/``_dbmazz_commit_ts``) into a fresh table of the same shape the sink creates.
    ``check(sink, schema) -> {"rows": n, ...}``: read back what the sink holds after the apply.
    ``raw_load_in_batches(final_rows, schema, batch_rows) -> seconds``: as ``raw_load``, but in slices of
    ``batch_rows`` rows, each committed on its own: the durable commits the sink pays per applied batch, so
    the steady state is compared with a load that pays them too (into a table of its own: ``raw_load`` runs in
    the same target, for ``ratio_vs_one_load``). None: compared with the one-load reference."""

    sink_config: dict[str, Any]
    raw_load: Callable[[pa.Table, TableSchema], float]
    check: Callable[[Any, TableSchema], dict[str, Any]]
    extra: dict[str, Any] = field(default_factory=dict)
    raw_load_in_batches: Callable[[pa.Table, TableSchema, int], float] | None = None


_STATUSES = pa.array(["new", "paid", "shipped", "delivered", "returned"])
_EPOCH_US = 1_700_000_000_000_000


def _values(ids: np.ndarray, rng: np.random.Generator) -> dict[str, pa.Array]:
    n = len(ids)
    sku = pa.array(rng.integers(1, 100_000, n))
    qty = pa.array(rng.integers(1, 20, n))
    return {
        "id": pa.array(ids, pa.int64()),
        "customer_id": pa.array(rng.integers(1, 50_000, n, dtype=np.int32)),
        "amount": pc.cast(
            pc.divide(pa.array(rng.integers(0, 10**9, n), pa.float64()), 100.0), pa.decimal128(12, 2)
        ),
        "status": _STATUSES.take(pa.array(rng.integers(0, len(_STATUSES), n))),
        "note": pc.binary_join_element_wise("order note #", pc.cast(pa.array(ids), pa.string()), ""),
        "created_at": pa.array(_EPOCH_US + rng.integers(0, 10**13, n), pa.int64()).cast(
            pa.timestamp("us", tz="UTC")
        ),
        "payload": pc.binary_join_element_wise(
            '{"sku": ',
            pc.cast(sku, pa.string()),
            ', "qty": ',
            pc.cast(qty, pa.string()),
            ', "tags": ["a", "b"]}',
            "",
        ),
    }


def _changes(ids: np.ndarray, ops: np.ndarray, rng: np.random.Generator) -> pa.Table:
    data = _values(ids, rng)
    for name in ("customer_id", "amount", "status", "note", "created_at", "payload"):
        data[name] = pc.if_else(pa.array(ops == OP_DELETE), pa.scalar(None, data[name].type), data[name])
    return pa.table(data)


def orders_workload(inserts: int, seed: int = 7) -> tuple[pa.Table, pa.Table]:
    """Insert ``inserts`` orders, update 25% of them, delete 10%; returns (changes in source order, final rows).

    Every change is its own transaction (version = its position); a deleted order is never updated after.
    """
    rng = np.random.default_rng(seed)
    deleted = rng.choice(np.arange(1, inserts + 1), inserts // 10, replace=False)
    alive = np.setdiff1d(np.arange(1, inserts + 1), deleted)
    updated = rng.choice(alive, inserts // 4, replace=True)
    later_ids = np.concatenate([updated, deleted])
    later_ops = np.concatenate([np.full(len(updated), OP_UPDATE), np.full(len(deleted), OP_DELETE)])
    order = rng.permutation(len(later_ids))
    ids = np.concatenate([np.arange(1, inserts + 1), later_ids[order]])
    ops = np.concatenate([np.full(inserts, OP_INSERT), later_ops[order]]).astype(np.int8)
    changes = _changes(ids, ops, rng)
    versions = np.arange(1_000, 1_000 + len(ids), dtype=np.uint64)
    changes = changes.append_column("_dbmazz_op", pa.array(ops, pa.int8()))
    changes = changes.append_column("_dbmazz_version", pa.array(versions, pa.uint64()))
    changes = changes.append_column(
        "_dbmazz_commit_ts",
        pa.array(_EPOCH_US + versions.astype(np.int64) * 1000).cast(pa.timestamp("us", tz="UTC")),
    )
    changes = changes.append_column("_dbmazz_unknown_columns", pa.nulls(len(ids), pa.list_(pa.string())))
    changes = changes.cast(ORDERS.arrow_schema())
    last = compact(changes, ORDERS.primary_key)
    final = last.filter(pc.not_equal(last.column("_dbmazz_op"), OP_DELETE))
    final = final.select([*ORDERS.column_names, "_dbmazz_version", "_dbmazz_commit_ts"])
    return changes, final.sort_by("id")


def stage_workload(changelog: ChangeLog, pipeline: str, changes: pa.Table, batch_changes: int) -> list[str]:
    """Cut the changes into batches of ``batch_changes`` and write each to the change log."""
    ids = []
    for n, start in enumerate(range(0, changes.num_rows, batch_changes)):
        part = changes.slice(start, batch_changes)
        batch_id = f"{n:06d}"
        writer = changelog.writer(pipeline, batch_id, Lsn(start))
        writer.add(Rows(ORDERS, part))
        writer.add(Heartbeat(Lsn(1_000 + start + part.num_rows)))
        writer.commit()
        ids.append(batch_id)
    return ids
