"""StarRocks-only schema changes and partial updates (the scenarios every sink shares run in ../conformance/),
read back through the ``items_current`` view over the MySQL protocol of the stand-in StarRocks."""

import json

import pytest

from dbmazz_connectors.core import OP_INSERT, SchemaChange, SchemaChangeError, create_sink

from .. import _scenarios
from .._workload import rows_table
from ._read import ViewReader


@pytest.fixture
def sink(sr_db):
    sink = create_sink({"url": sr_db.url, "pipeline": "p"})
    sink.connect()
    yield ViewReader(sink)
    sink.disconnect()


def test_a_widened_key_column_is_refused_before_any_row_is_written(sink):
    base = _scenarios.BASE
    narrow = _scenarios._with(base, id="int32")
    _scenarios._apply(
        sink,
        "b1",
        narrow,
        _scenarios.Rows(narrow, rows_table(narrow, [(OP_INSERT, 10, {"id": 1, "qty": 5}, None)])),
    )
    with pytest.raises(
        SchemaChangeError, match=r"public.items.id changed from int32 to int64.*cannot follow in place"
    ):
        _scenarios._apply(
            sink,
            "b2",
            narrow,
            SchemaChange(base, 20),
            _scenarios.Rows(base, rows_table(base, [(OP_INSERT, 20, {"id": 2**40, "qty": 2}, None)])),
        )
    assert sink.fetchall("SELECT id, qty FROM public.items ORDER BY id") == [(1, 5)]


def test_a_widening_applied_again_after_a_crash_skips_the_done_modify(sink):
    """StarRocks answers a MODIFY to the type a column already has with an error: a re-run must skip it."""
    _scenarios.widening(sink)
    sink.execute("DELETE FROM _dbmazz_applied_batches WHERE batch_id = 'b2'")
    sink.execute(
        "INSERT INTO _dbmazz_tables (table_name, target, schema_json, truncated_version) "
        "VALUES (%s, %s, %s, %s)",
        ("public.items", "items", json.dumps(_scenarios.BASE.to_dict()), 0),
    )
    sink._states.clear()  # as a new process would: the state saved before the crash
    wide = _scenarios._with(_scenarios.BASE, qty="int64", price="decimal(12,2)")
    result = _scenarios._apply(sink, "b2", _scenarios.BASE, SchemaChange(wide, 20))
    assert result.details["columns_widened"] == 2
    assert sink.fetchall("SELECT id, qty FROM public.items ORDER BY id")[0] == (1, 5)


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
