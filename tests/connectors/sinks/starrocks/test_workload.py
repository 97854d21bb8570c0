"""StarRocks replays newest first (against the stand-in StarRocks); the workload in order, replayed and
interleaved runs for every sink in ../conformance/."""

from dbmazz_connectors.core import BatchRef

from .._workload import assert_sink_equals, mixed_workload
from ._read import current_rows, sink  # noqa: F401 - the fixture


def test_replays_newest_first_after_the_batches_change_nothing(sink):  # noqa: F811
    """Every batch replayed again, newest first, under new ids: the merge condition keeps the highest
    version and tombstones keep deleted keys deleted (a physical delete would let an older insert back)."""
    wl = mixed_workload(seed=15)
    for n, batch in enumerate(wl.batches + list(reversed(wl.batches))):
        sink.write_batch(batch.change_batch(), BatchRef("p", f"order-{n}"))
    assert_sink_equals(current_rows(sink, wl.final_schema), wl.expected)
    assert sink.row_count("public.orders") == len(wl.expected)
