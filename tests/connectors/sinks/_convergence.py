"""Convergence scenarios every sink must pass: batches applied twice, replayed under new ids, snapshots interleaved.

Each function takes a connected sink and ``read_rows(sink, schema)``, which returns the sink table's live rows
(the sink's own way of reading them), and asserts the sink equals the modelled source row by row.
"""

from __future__ import annotations

from collections.abc import Callable

from dbmazz_connectors.core import BatchRef
from dbmazz_connectors.engine import apply_batch

from ._workload import assert_sink_equals, mixed_workload, write_batches

__all__ = ["applied_twice", "replayed_under_new_ids", "snapshots_interleaved"]

ReadRows = Callable[..., list]


def applied_twice(sink, changelog, read_rows: ReadRows, seed: int) -> None:
    """Every batch applied a second time is recognised as applied and writes nothing."""
    wl = mixed_workload(seed=seed)
    for batch_id in write_batches(changelog, "p", wl.batches):
        apply_batch(changelog, sink, "p", batch_id)
        again = apply_batch(changelog, sink, "p", batch_id)["public.orders"]
        assert again.already_applied and again.rows_written == 0
    assert_sink_equals(read_rows(sink, wl.final_schema), wl.expected)


def replayed_under_new_ids(sink, read_rows: ReadRows, seed: int) -> None:
    """Bypassing the applied-batch record (and tokens): the versions alone make replays harmless."""
    wl = mixed_workload(seed=seed)
    for n, batch in enumerate(wl.batches * 2):
        sink.write_batch(batch.change_batch(), BatchRef("p", f"replay-{n}"))
    assert_sink_equals(read_rows(sink, wl.final_schema), wl.expected)


def snapshots_interleaved(sink, read_rows: ReadRows, seed: int) -> None:
    """Snapshot-style insert batches mixed into the CDC batches converge to the same rows."""
    wl = mixed_workload(seed=seed)
    for batch in wl.interleaved():
        sink.write_batch(batch.change_batch(), BatchRef("p", batch.batch_id))
    assert_sink_equals(read_rows(sink, wl.final_schema), wl.expected)
