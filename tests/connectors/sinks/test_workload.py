"""The shared sink workload is self-consistent: folding its batches gives its expected source state."""

from dbmazz_connectors.engine import fold_table

from ._workload import ORDERS_WIDER, assert_sink_equals, mixed_workload, write_batches


def _folded(changelog, batches):
    write_batches(changelog, "p", batches)
    schema, state = fold_table(changelog, "p", "public.orders")
    names = schema.column_names
    return [tuple(r[n] for n in names) for r in state.to_pylist()]


def test_folding_the_cdc_batches_gives_the_expected_source_rows(changelog):
    wl = mixed_workload(seed=3)
    assert wl.final_schema == ORDERS_WIDER and len(wl.expected) > 100
    assert_sink_equals(_folded(changelog, wl.batches), wl.expected)


def test_the_workload_holds_every_kind_of_change():
    wl = mixed_workload(seed=3)
    kinds = {type(e).__name__ for b in wl.batches for e in b.events}
    assert kinds == {"Rows", "Truncate", "SchemaChange"}
    unknown = [
        u
        for b in wl.batches
        for e in b.events
        if type(e).__name__ == "Rows"
        for u in e.data.column("_dbmazz_unknown_columns").to_pylist()
        if u
    ]
    assert unknown and all(u == ["note"] for u in unknown)


def test_assert_sink_equals_names_the_differences():
    try:
        assert_sink_equals([(1, "a"), (3, "c")], [(1, "b"), (2, "x")])
    except AssertionError as exc:
        text = str(exc)
    assert "1 missing, 1 extra, 1 different" in text and "key (1,): columns [1]" in text
