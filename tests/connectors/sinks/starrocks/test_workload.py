"""The StarRocks sink converges to the source (against the stand-in StarRocks): in order, replayed, interleaved."""

from dbmazz_connectors.core import BatchRef
from dbmazz_connectors.engine import apply_batch

from .._convergence import applied_twice, replayed_under_new_ids, snapshots_interleaved
from .._workload import assert_sink_equals, mixed_workload, write_batches
from ._read import current_rows, sink  # noqa: F401 - the fixture


def test_mixed_workload_from_the_change_log_equals_the_source(sink, changelog):  # noqa: F811
    wl = mixed_workload(seed=11)
    for batch_id in write_batches(changelog, "p", wl.batches):
        result = apply_batch(changelog, sink, "p", batch_id)["public.orders"]
        assert not result.already_applied
    assert_sink_equals(current_rows(sink, wl.final_schema), wl.expected)
    assert sink.high_water_version("public.orders") == wl.batches[-1].end_version
    assert sink.row_count("public.orders") == len(wl.expected)


def test_every_batch_applied_twice_gives_the_same_rows(sink, changelog):  # noqa: F811
    applied_twice(sink, changelog, current_rows, seed=12)


def test_replays_under_new_batch_ids_converge_by_version(sink):  # noqa: F811
    replayed_under_new_ids(sink, current_rows, seed=13)


def test_snapshot_batches_interleaved_give_the_same_rows(sink):  # noqa: F811
    snapshots_interleaved(sink, current_rows, seed=14)


def test_replays_newest_first_after_the_batches_change_nothing(sink):  # noqa: F811
    """Every batch replayed again, newest first, under new ids: the merge condition keeps the highest
    version and tombstones keep deleted keys deleted (a physical delete would let an older insert back)."""
    wl = mixed_workload(seed=15)
    for n, batch in enumerate(wl.batches + list(reversed(wl.batches))):
        sink.write_batch(batch.change_batch(), BatchRef("p", f"order-{n}"))
    assert_sink_equals(current_rows(sink, wl.final_schema), wl.expected)
    assert sink.row_count("public.orders") == len(wl.expected)
