"""Schema changes, truncates and unknown values in the StarRocks sink (scenarios in ../_scenarios.py),
read back through the ``items_current`` view over the MySQL protocol of the stand-in StarRocks."""

import pytest

from dbmazz_connectors.core import OP_INSERT, SchemaChange, SchemaChangeError, create_sink

from .. import _scenarios
from .._workload import rows_table
from ._read import ViewReader

# widening a column in place is not done by this sink (yet): refused before anything is written
SCENARIOS = [s for s in _scenarios.__all__ if s != "widening"]


@pytest.fixture
def sink(sr_db):
    sink = create_sink({"url": sr_db.url, "pipeline": "p"})
    sink.connect()
    yield ViewReader(sink)
    sink.disconnect()


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenario(sink, scenario):
    getattr(_scenarios, scenario)(sink)


def test_a_widened_column_is_refused_before_any_row_is_written(sink):
    base = _scenarios.BASE
    _scenarios._apply(
        sink,
        "b1",
        base,
        _scenarios.Rows(base, rows_table(base, [(OP_INSERT, 10, {"id": 1, "qty": 5}, None)])),
    )
    wide = _scenarios._with(base, qty="int64")
    with pytest.raises(
        SchemaChangeError, match=r"public.items.qty changed from int32 to int64.*does not widen"
    ):
        _scenarios._apply(
            sink,
            "b2",
            base,
            SchemaChange(wide, 20),
            _scenarios.Rows(wide, rows_table(wide, [(OP_INSERT, 20, {"id": 2, "qty": 2**40}, None)])),
        )
    assert sink.fetchall("SELECT id, qty FROM public.items ORDER BY id") == [(1, 5)]


def test_unknown_values_are_partial_updates_that_keep_the_stored_value(sink, sr_db):
    """An update not knowing ``label`` is loaded with partial_update and a columns list without it."""
    base = _scenarios.BASE
    _scenarios._apply(
        sink,
        "b1",
        base,
        _scenarios.Rows(
            base, rows_table(base, [(OP_INSERT, 10, {"id": 1, "qty": 1, "label": "toasted"}, None)])
        ),
    )
    result = _scenarios._apply(
        sink,
        "b2",
        base,
        _scenarios.Rows(
            base,
            rows_table(base, [(1, 20, {"id": 1, "qty": 2}, ["label"]), (1, 20, {"id": 2, "qty": 3}, None)]),
        ),
    )
    assert result.details["partial_loads"] == 1 and result.details["loads"] == 2
    partial = [h for h in sr_db.server.loads if h["db"] == sr_db.name and h.get("partial_update") == "true"]
    assert [h["columns"] for h in partial] == [
        "`id`,`qty`,`price`,`_dbmazz_version`,`_dbmazz_commit_ts`,`_dbmazz_is_deleted`"
    ]
    assert sink.fetchall("SELECT id, qty, label FROM public.items ORDER BY id") == [
        (1, 2, "toasted"),
        (2, 3, None),
    ]
